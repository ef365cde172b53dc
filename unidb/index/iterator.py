"""The one scan interface every access path honours (VBase; Lucene's DocIdSetIterator idea).

A scan yields batches of (row_ids, distances) in *approximately* increasing distance;
smaller is closer. Score-ranked paths (BM25, inner product) yield `-score` as the distance so
operators never special-case direction. Operators — not indexes — decide when to stop, using
the relaxed-monotonicity detector (unidb.query.monotone, ALGORITHMS.md §1).

It lives at the index layer, below every access path, so that indexes implement it without
importing the query layer that consumes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable

import numpy as np


@dataclass
class ScanBatch:
    row_ids: np.ndarray      # int64, no row id repeats within one scan
    distances: np.ndarray    # float64, same length; smaller = closer

    def __len__(self) -> int:
        return len(self.row_ids)


@runtime_checkable
class ScanIterator(Protocol):
    """Pull-based scan. `next_batch()` returns None when exhausted."""

    # Relaxed-monotonicity defaults for this access path (ALGORITHMS.md §1):
    # E = neighbourhood size, w = window of recent distances.
    default_E: int
    default_w: int

    def next_batch(self) -> ScanBatch | None: ...

    def cost(self) -> int:
        """Upper bound on the number of rows this scan can still yield."""
        ...


def iterate(scan: ScanIterator) -> Iterator[ScanBatch]:
    """Drain a scan as a Python iterator of batches."""
    while True:
        b = scan.next_batch()
        if b is None:
            return
        yield b
