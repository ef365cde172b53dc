"""Scans over an inverted index (the iterator protocol of unidb/index/iterator.py).

Both scans yield rows in EXACT decreasing-score order (ties: smaller row id first), so the
relaxed-monotonicity detector sees a strictly monotone stream (E = w = 1, the B-tree case of
ALGORITHMS.md §1) and fusion can read ranks straight off the stream.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from unidb.index.iterator import ScanBatch
from unidb.index.rowfilter import Allow as AllowFn, RowFilter

# The rows a query may return: the engine's RowFilter, or a plain allow(row_ids) -> bool mask.
Allow = RowFilter | AllowFn

# First depth of a scan; each later batch doubles the depth (exact order, geometric cost).
SCAN_FIRST = 64
# Switch a scan from repeated pruned top-k to one exhaustive pass once the requested depth
# reaches this fraction of the postings the query touches.
SCAN_EXHAUSTIVE_FRACTION = 0.25


def rank_rows(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by score descending, then row id ascending."""
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


class RankedPostings(Protocol):
    """What IndexScan reads from an inverted index (InvertedIndex implements it). Declared
    here, beside the scan, so this module needs nothing from inverted.py, which imports it."""

    def _cost(self, terms: np.ndarray) -> int: ...

    def _topk(self, terms: np.ndarray, qw: np.ndarray, k: int, allow: Allow | None
              ) -> tuple[np.ndarray, np.ndarray]: ...

    def _score_all(self, terms: np.ndarray, qw: np.ndarray, allow: Allow | None
                   ) -> tuple[np.ndarray, np.ndarray]: ...

    def _exhaustive_list(self, terms: np.ndarray, qw: np.ndarray, allow: Allow | None
                         ) -> tuple[np.ndarray, np.ndarray] | None: ...


class IndexScan:
    """ScanIterator over an inverted index: exact decreasing-score order.

    Each batch is the next slice of an exact top-(2 * depth) (pruned), so batch scores never
    increase and ties come in row-id order; once the depth nears the postings the query
    touches, one exhaustive pass serves the rest. Being exactly ordered, the scan is monotone
    from the first row: the relaxed-monotonicity defaults are those of a B-tree (E = w = 1).
    """

    default_E = 1
    default_w = 1

    def __init__(self, index: RankedPostings, terms: np.ndarray, qw: np.ndarray,
                 allow: Allow | None = None, first: int | None = None) -> None:
        self._index = index
        self._terms = terms
        self._qw = qw
        self._allow = allow
        self._depth = 0
        first = SCAN_FIRST if first is None else first
        self._next = first
        self._done = len(terms) == 0
        self._all: tuple[np.ndarray, np.ndarray] | None = None
        self._postings = index._cost(terms) if len(terms) else 0
        # Small segments are scored term-at-a-time anyway: score once, then select per batch.
        full = index._exhaustive_list(terms, qw, allow) if len(terms) else None
        self._array = ArrayScan(*full, first) if full is not None else None

    def next_batch(self) -> ScanBatch | None:
        if self._array is not None:
            return self._array.next_batch()
        if self._done:
            return None
        want = self._next
        if self._all is None and want >= SCAN_EXHAUSTIVE_FRACTION * self._postings:
            self._all = self._index._score_all(self._terms, self._qw, self._allow)
        if self._all is not None:
            rows, scores = self._all[0][:want], self._all[1][:want]
        else:
            rows, scores = self._index._topk(self._terms, self._qw, want, self._allow)
        if len(rows) < want:
            self._done = True
        batch = ScanBatch(rows[self._depth:].copy(), -scores[self._depth:])
        self._depth = len(rows)
        self._next = 2 * want
        if len(batch) == 0:
            self._done = True
            return None
        return batch

    def cost(self) -> int:
        if self._array is not None:
            return self._array.cost()
        return 0 if self._done else max(self._postings - self._depth, 0)


class ArrayScan:
    """Exact-order scan over a full (row ids, scores) list: each batch selects the next best
    rows by partial selection (no full sort), ties by smaller row id."""

    default_E = 1   # exact order: strictly monotone (ALGORITHMS.md §1, B-tree case)
    default_w = 1

    def __init__(self, rows: np.ndarray, scores: np.ndarray, first: int | None = None) -> None:
        first = SCAN_FIRST if first is None else first
        self._rows, self._scores = rows, scores
        self._left = np.arange(len(rows))
        self._next = first

    def next_batch(self) -> ScanBatch | None:
        left = self._left
        if len(left) == 0:
            return None
        n = self._next
        self._next *= 2
        if n >= len(left):
            take = left
            self._left = left[:0]
        else:
            s = self._scores if len(left) == len(self._scores) else self._scores[left]
            kth = np.partition(s, len(s) - n)[len(s) - n]   # n-th largest
            above = left[s > kth]
            tied = left[s == kth]
            tied = tied[np.argsort(self._rows[tied], kind="stable")][:n - len(above)]
            take = np.concatenate((above, tied))
            keep = np.ones(len(self._rows), bool)
            keep[take] = False
            self._left = left[keep[left]]
        r, s = rank_rows(self._rows[take], self._scores[take])
        return ScanBatch(r, -s)

    def cost(self) -> int:
        return len(self._left)
