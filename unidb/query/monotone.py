"""Relaxed-monotonicity detector (VBase, ALGORITHMS.md §1).

A scan visits rows at distances d1, d2, ...  At step s:

- R(s) = the largest of the E smallest distances seen *before* s (the neighbourhood radius);
  undefined (+inf) until E distances have been seen;
- M(s) = median of the last w distances d_{s-w+1} .. d_s (the traversal position);
  undefined until w distances have been seen; w = None is the *growing* window of every
  distance seen so far (VBase's "vectors of the partitions probed so far" for IVF/SPANN);
- the scan is in its monotone phase from the first s with M(s) > R(s) on (sticky).

`observe(batch)` takes a whole batch at once with numpy and is equal, step for step, to
feeding the distances one by one (tests/test_query_monotone.py checks this against a
per-step reference with hypothesis).
"""
from __future__ import annotations

import bisect
from collections import deque

import numpy as np

# Defaults per access path (ALGORITHMS.md §1). A B-tree / exact flat scan is strictly
# monotone: E = w = 1 makes the detector fire at the second distinct step.
STRICT_E = 1
STRICT_W = 1
# Batch positions whose window median is computed at once while looking for the phase start.
_MEDIAN_CHUNK = 32


class MonotoneDetector:
    """Streaming detector of the monotone phase with parameters E (>= 1) and w (>= 1, or
    None for the growing window of all distances seen)."""

    def __init__(self, E: int = STRICT_E, w: int | None = STRICT_W):
        if int(E) < 1 or (w is not None and int(w) < 1):
            raise ValueError(f"E and w must be >= 1 (w may be None), got E={E!r}, w={w!r}")
        self.E = int(E)
        self.w = None if w is None else int(w)
        self.steps = 0                      # distances observed so far
        self.phase_step: int | None = None  # 1-based step at which M(s) > R(s) first held
        self._smallest: list[float] = []    # the E smallest distances seen, sorted
        self._window: deque[float] = deque(maxlen=self.w or 1)
        self._all = np.empty(1024, dtype=np.float64) if self.w is None else None
        self._sorted_prefix: list[float] = []   # growing window before the phase, sorted

    @property
    def monotone(self) -> bool:
        return self.phase_step is not None

    @property
    def radius(self) -> float:
        """R for the next step: the E-th smallest distance seen so far (+inf if fewer)."""
        return self._smallest[-1] if len(self._smallest) == self.E else float("inf")

    def _recent(self) -> np.ndarray:
        if self.w is None:
            return self._all[:self.steps]
        return np.fromiter(self._window, np.float64, len(self._window))

    def window_median(self) -> float:
        """Median of the last w distances (of all seen while fewer than w; nan if none)."""
        if self.steps == 0:
            return float("nan")
        return float(np.median(self._recent()))

    def window_min_exceeds(self, x: float) -> bool:
        """Every distance in the window is > x (no recent row came closer than x)."""
        vals = self._recent()
        return len(vals) > 0 and bool(vals.min() > x)

    def median_exceeds(self, x: float) -> bool:
        """window_median() > x, by counting where that settles it (the growing window can
        hold the whole scan; a count is cheaper than a median)."""
        vals = self._recent()
        s = len(vals)
        if s == 0 or not np.isfinite(x) and x > 0:
            return False
        c = int(np.count_nonzero(vals <= x))
        m, odd = divmod(s, 2)
        if odd:
            return c <= m
        if c <= m - 1:
            return True
        if c >= m + 1:
            return False
        return float(np.median(vals)) > x

    def observe(self, distances: np.ndarray) -> bool:
        """Observe one batch of distances in scan order; return whether the phase is reached."""
        d = np.asarray(distances, dtype=np.float64).reshape(-1)
        n = len(d)
        if n == 0:
            return self.monotone
        if self.phase_step is None:
            hit = self._first_hit(d)
            if hit is not None:
                self.phase_step = self.steps + hit + 1
        self._absorb(d)
        self.steps += n
        return self.monotone

    # -- batch internals ------------------------------------------------------------------

    def _radii(self, d: np.ndarray) -> np.ndarray:
        """R before each position of the batch (step function, non-increasing)."""
        n = len(d)
        out = np.empty(n, dtype=np.float64)
        smallest = list(self._smallest)
        E = self.E
        r = smallest[-1] if len(smallest) == E else np.inf
        # Only elements below the radius at batch start can ever change R inside the batch;
        # loop over those (few once the scan has found its neighbourhood), not the whole batch.
        cand = np.flatnonzero(d < r) if np.isfinite(r) else np.arange(n)
        pos = 0
        for i in cand.tolist():
            x = float(d[i])
            if len(smallest) == E and x >= smallest[-1]:
                continue
            out[pos:i + 1] = r            # R for steps up to and including i uses the old set
            pos = i + 1
            bisect.insort(smallest, x)
            if len(smallest) > E:
                smallest.pop()
            r = smallest[-1] if len(smallest) == E else np.inf
        out[pos:] = r
        return out

    def _medians(self, d: np.ndarray) -> np.ndarray:
        """M at each position of the batch for w = 1 or the growing window."""
        return d.copy() if self.w == 1 else self._growing_medians(d)

    def _growing_medians(self, d: np.ndarray) -> np.ndarray:
        # Only needed before the phase fires, which with a growing window happens within
        # about 2E steps (the median of everything passes the E-th smallest), so a sorted
        # list with per-step insertion stays short.
        out = np.empty(len(d))
        srt = self._sorted_prefix
        for i, x in enumerate(d.tolist()):
            bisect.insort(srt, x)
            n = len(srt)
            out[i] = srt[n // 2] if n % 2 else 0.5 * (srt[n // 2 - 1] + srt[n // 2])
        return out

    def _first_hit(self, d: np.ndarray) -> int | None:
        # R before position i is R over steps < this step, i.e. excludes d[i] itself.
        r = self._radii(d)
        if self.w is None or self.w == 1:
            m = self._medians(d)
            idx = np.flatnonzero(m > r)                # nan / inf compare False
            return int(idx[0]) if len(idx) else None
        # Fixed window: medians only where the window is full and R is finite, a chunk at a
        # time, stopping at the first hit (the phase is sticky; later steps do not matter).
        w = self.w
        hist = np.fromiter(self._window, np.float64, len(self._window))
        full = np.concatenate([hist[-(w - 1):], d])
        lead = len(full) - len(d)
        first = max(w - 1 - lead, 0)                   # first batch position with a full window
        finite = np.flatnonzero(np.isfinite(r[first:]))
        if len(finite) == 0:
            return None
        start = first + int(finite[0])
        view = np.lib.stride_tricks.sliding_window_view(full, w)
        for a in range(start, len(d), _MEDIAN_CHUNK):
            b = min(a + _MEDIAN_CHUNK, len(d))
            # the window ending at batch position i is view[i + lead - (w - 1)]
            med = np.median(view[a + lead - (w - 1):b + lead - (w - 1)], axis=1)
            hit = np.flatnonzero(med > r[a:b])
            if len(hit):
                return a + int(hit[0])
        return None

    def _absorb(self, d: np.ndarray) -> None:
        E = self.E
        if len(self._smallest) < E or d.min() < self._smallest[-1]:
            k = min(E, len(d))
            part = np.partition(d, k - 1)[:k] if k < len(d) else d
            merged = np.sort(np.concatenate([np.asarray(self._smallest), part]))[:E]
            self._smallest = merged.tolist()
        if self.w is None:
            if self.steps + len(d) > len(self._all):
                grown = np.empty(max(2 * len(self._all), self.steps + len(d)))
                grown[:self.steps] = self._all[:self.steps]
                self._all = grown
            self._all[self.steps:self.steps + len(d)] = d
            if self.phase_step is not None:
                self._sorted_prefix = []
        else:
            self._window.extend(d[-self.w:].tolist())


class ReferenceDetector:
    """Per-step definition of the detector, written for clarity; tests compare against it."""

    def __init__(self, E: int, w: int):
        self.E, self.w = E, w
        self.seen: list[float] = []
        self.phase_step: int | None = None

    def step(self, x: float) -> bool:
        prior = sorted(self.seen)
        self.seen.append(float(x))
        s = len(self.seen)
        w = s if self.w is None else self.w
        if self.phase_step is None and len(prior) >= self.E and s >= w:
            R = prior[self.E - 1]
            M = float(np.median(self.seen[-w:]))
            if M > R:
                self.phase_step = s
        return self.phase_step is not None
