"""Weighted multi-vector top-k as a threshold algorithm (Fagin's TA over ALGORITHMS.md §1 scans).

score(row) = sum_c weight_c * distance_c(row), smaller is better. One scan per vector column;
a row first seen on any stream gets its full score by random access to every column (a shared
seen set scores it once). With frontier_c the distance a stream has reached, no unseen row can
score below  T = sum_c weight_c * frontier_c,  so the k-th best held score <= T ends the query
(all streams must be in their monotone phase, which is immediate for exact scans).

Pull scheduling:
- "round-robin": one batch from each stream in turn;
- "auto" (default): adaptive on exact streams, round-robin on relaxed ones (measured);
- "adaptive": deficit round-robin in proportion to each stream's weight times its
  distance spread (median - min of its first batch, i.e. how fast its frontier grows), so the
  stream whose weighted frontier contributes most to the threshold is pulled most and none
  starves. With weights 1:10 the heavy stream dominates both T and the combined score, so most
  pulls go there. (Shares from the *current* frontiers fed back on themselves: a stream pulled
  more moved its frontier more and took every pull; measured in docs/query-execution.md.)
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from unidb.errors import ValidationError
from unidb.index.flat.scan import FlatScan, exact_distances, query_vector
from unidb.query.explain import Explain
from unidb.query.monotone import MonotoneDetector
from unidb.query.operators import TopK, detector_params, evaluated, is_strict, scan_budget, unseen

SCHEDULES = ("auto", "adaptive", "round-robin")
FINISH_CHUNK = 65_536        # rows gathered at once by the exact finish
MV_BATCH = 64                # rows per pull from a flat stream: small pulls keep the
                             # threshold test frequent (the TA stop is checked per pull)


class _Stream:
    def __init__(self, column: str, weight: float, scan, k: int, params: dict[str, Any],
                 index=None):
        self.column, self.weight, self.scan = column, float(weight), scan
        E, w = detector_params(scan, k, params, index)
        self.detector = MonotoneDetector(E, w)
        self.strict = is_strict(scan)
        self.frontier = -np.inf        # estimated lower bound on distances not yet yielded
        self.spread = 0.0              # median - min of the first batch: distance growth scale
        self.credit = 0.0              # adaptive schedule: pulls owed to this stream
        self.pulled = 0
        self.exhausted = False

    def pull(self):
        b = self.scan.next_batch()
        if b is None:
            self.exhausted = True
            self.frontier = np.inf
            return None
        self.detector.observe(b.distances)
        if self.strict:
            # an exact scan is sorted: the last distance bounds everything after it
            new = float(b.distances.max())
        else:
            # a relaxed scan only promises "roughly increasing": the smallest distance of the
            # recent window (VBase's w rows) is the frontier, never allowed to move back
            new = float(self.detector._recent().min())
        self.frontier = max(self.frontier, new)
        if self.pulled == 0:
            self.spread = float(np.median(b.distances) - b.distances.min())
        self.pulled += len(b)
        return b

    @property
    def contribution(self) -> float:
        """How fast pulling this stream raises the threshold: weight * distance spread."""
        return self.weight * self.spread


def _score(source, queries: dict[str, np.ndarray], weights: dict[str, float],
           ids: np.ndarray) -> np.ndarray:
    total = np.zeros(len(ids), dtype=np.float64)
    for c, q in queries.items():
        _, metric = source.vector_column(c)
        total += weights[c] * exact_distances(source.vectors(c, ids), q, metric)
    return total


def _open(source, column: str, q: np.ndarray, params: dict[str, Any]):
    index = source.vector_index(column)
    if index is not None and params.get("force_plan") != "exact":
        knobs = dict(params.get("scan_knobs") or {})
        return index.scan(q, **knobs)
    ids, matrix = source.flat_rows(column)
    _, metric = source.vector_column(column)
    return FlatScan(ids, matrix, metric, q, batch_size=params.get("batch_size", MV_BATCH))


def multivector_topk(source, queries: dict[str, np.ndarray], weights: dict[str, float] | None,
                     k: int, expr=None, params: dict[str, Any] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, Explain]:
    """Top-k rows by the weighted distance sum over several vector columns; `expr` is a
    filter or the query's RowFilter."""
    params = dict(params or {})
    if not queries:
        raise ValidationError("multi-vector search needs at least one (column, query) pair")
    weights = {c: float((weights or {}).get(c, 1.0)) for c in queries}
    if any(w < 0 for w in weights.values()):
        raise ValidationError(f"weights must be >= 0, got {weights}")
    schedule = params.get("schedule", "auto")
    if schedule not in SCHEDULES:
        raise ValidationError(f"schedule={schedule!r}; use one of {SCHEDULES}")
    explain = Explain(operator="multivector")
    t0 = time.perf_counter()
    qs = {c: query_vector(q, source.vector_column(c)[0]) for c, q in queries.items()}
    live = source.live_rowmask()
    with explain.stage("filter"):
        rows = evaluated(source, expr)
    matches = rows.count
    n_live = int(live.sum())
    k_eff = min(int(k), matches)
    explain.rows_total, explain.rows_matched = n_live, matches
    explain.k, explain.k_effective = int(k), k_eff
    explain.reason = f"{len(qs)} vector columns, weights {weights}"
    top = TopK(k_eff)
    seen = np.zeros(len(live), dtype=bool)
    budget = scan_budget(n_live, params, source.planner_options)
    with explain.stage("streams"):
        streams = [_Stream(c, weights[c], _open(source, c, qs[c], params), k_eff, params,
                           source.vector_index(c)) for c in qs]
    if schedule == "auto":
        # measured (bench/filtered.py): adaptive pulls fewer rows on exact streams; on relaxed
        # (partition) streams each frontier lags a window of w rows, so even pulls raise the
        # threshold sooner and round-robin pulled 15-50% fewer rows
        schedule = "adaptive" if all(s.strict for s in streams) else "round-robin"
    explain.plan = f"threshold-algorithm ({schedule})"
    finished = k_eff == 0
    turn = 0
    with explain.stage("threshold-algorithm"):
        while not finished:
            live_streams = [s for s in streams if not s.exhausted]
            if not live_streams:
                break
            fresh = [s for s in live_streams if s.pulled == 0]
            total = sum(s.contribution for s in live_streams)
            if fresh:
                s = fresh[0]
            elif schedule == "round-robin" or total <= 0:
                s = live_streams[turn % len(live_streams)]
                turn += 1
            else:
                # deficit round-robin: each stream earns pulls in proportion to its share of
                # the threshold, so a heavy stream is pulled more and none starves
                for x in live_streams:
                    x.credit += x.contribution / total
                s = max(live_streams, key=lambda x: x.credit)
                s.credit -= 1.0
            b = s.pull()
            if b is None:
                break        # a stream that ends has yielded every indexed row
            ids = b.row_ids[~seen[b.row_ids]]
            seen[ids] = True
            ids = ids[rows.allows(ids)]
            if len(ids):
                top.push(ids, _score(source, qs, weights, ids))
                explain.distances_computed += len(ids) * len(qs)
            pulled = sum(x.pulled for x in streams)
            threshold = sum(x.weight * x.frontier for x in streams if x.weight > 0)
            if len(top) >= matches:
                explain.stop_reason = "all matching rows held"
                finished = True
            elif top.full and all(x.detector.monotone for x in streams) and top.kth <= threshold:
                explain.stop_reason = "threshold reached"
                finished = True
            elif pulled >= budget:
                explain.stop_reason = "budget exhausted"
                explain.budget_exhausted = True
                break
    if not finished:
        with explain.stage("exact-finish"):
            rest = unseen(rows, seen)
            for a in range(0, len(rest), FINISH_CHUNK):     # bounded memory on big tables
                part = rest[a:a + FINISH_CHUNK]
                top.push(part, _score(source, qs, weights, part))
            explain.exact_finish_rows = len(rest)
            explain.distances_computed += len(rest) * len(qs)
            explain.stop_reason = explain.stop_reason or "streams exhausted"
    ids, d = top.result()
    if len(ids) != k_eff:
        raise AssertionError(f"multi-vector top-k returned {len(ids)} rows, guaranteed {k_eff}")
    explain.candidates_visited = sum(s.pulled for s in streams)
    explain.effective_k_prime = explain.candidates_visited
    explain.details["pulled_per_stream"] = {s.column: s.pulled for s in streams}
    explain.monotone_step = max((s.detector.phase_step or 0) for s in streams) or None
    explain.rows_returned = len(ids)
    explain.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
    return ids, d, explain
