"""What every index kind honours (faiss's small `Index` surface; Lucene's one iterator).

An index maps row ids to values of one column and answers one kind of access. The common
part, `Index`, is what the table's index set (engine/indexes.py) uses to feed, persist, measure
and close any kind without knowing which it is:

    add(row_ids, values)        index rows (an empty batch is a no-op); values in the kind's
                                form: (n, dim) float32 vectors, texts, sparse vectors, numbers
    delete(row_ids) -> int      remove rows; unknown or already deleted ids are ignored;
                                returns how many indexed rows it removed
    save(folder, covered)       crash-safe snapshot into `folder`, tagged with `covered`
                                (the caller's watermark: the table's next row id)
    load(folder) -> (index, covered)   classmethod: the last complete snapshot in `folder`
    stats() -> dict             JSON-able numbers: every key of the class's STATS_KEYS,
                                among them COMMON_STATS ("live_rows" == len(index), "bytes"
                                held by the index's arrays, in memory or mapped)
    close()                     release threads, files, mappings; idempotent (a pure
                                in-memory structure documents it as a no-op)
    __len__()                   live (indexed, not deleted) rows

Access is kind-specific, in three small sub-protocols: `VectorIndex` (k-nearest search and a
distance-ordered scan: the partition index), `TermIndex` (ranked search, scan and scoring
over terms: the BM25 text index and the sparse-vector index; their query arguments differ
in form), `ScalarIndex` (key ranges: the sorted index). Every scan is a ScanIterator
(index/iterator.py).

The protocols are runtime-checkable: `isinstance(idx, VectorIndex)` checks that the methods
exist (not their signatures; tests/test_index_contract.py checks behaviour).
"""
from __future__ import annotations

import os
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from unidb.index.iterator import ScanIterator

# Keys every index's stats() has.
COMMON_STATS = ("live_rows", "bytes")


@runtime_checkable
class Index(Protocol):
    """The part every index kind honours (module docstring)."""

    STATS_KEYS: ClassVar[tuple[str, ...]]     # every key stats() returns

    def add(self, row_ids: np.ndarray, values: Any) -> None: ...

    def delete(self, row_ids: np.ndarray) -> int: ...

    def save(self, folder: str | os.PathLike, covered: int) -> None: ...

    @classmethod
    def load(cls, folder: str | os.PathLike) -> tuple[Index, int]: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...


@runtime_checkable
class VectorIndex(Index, Protocol):
    """Dense vectors: k nearest live rows, and a scan in increasing distance."""

    dim: int
    metric: str

    def search(self, queries: np.ndarray, k: int, **knobs: Any
               ) -> tuple[np.ndarray, np.ndarray]:
        """(ids (nq, k) int64 -1 padded, distances (nq, k) float64 +inf padded)."""
        ...

    def scan(self, query: np.ndarray, **knobs: Any) -> ScanIterator: ...


@runtime_checkable
class TermIndex(Index, Protocol):
    """Postings over terms (analyzed words, sparse dimensions), scored exactly. `*query` is
    the kind's query form: a text, or (indices, values) of a sparse vector."""

    def search(self, *query: Any, **knobs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k: (row ids int64, scores float64), best first."""
        ...

    def scan(self, *query: Any, **knobs: Any) -> ScanIterator:
        """Rows in exact decreasing-score order (distance = -score)."""
        ...

    def scores_for(self, *query: Any) -> np.ndarray:
        """Score of each given row (last argument: row ids); NaN where no term matches."""
        ...

    def upper_bound(self, *query: Any) -> float: ...

    def match_mask(self, *query: Any) -> np.ndarray: ...


@runtime_checkable
class ScalarIndex(Index, Protocol):
    """Numeric keys: rows in a key range, counted exactly or scanned in key order."""

    def count_range(self, lo=None, hi=None, lo_incl: bool = True, hi_incl: bool = True) -> int:
        ...

    def range_rows(self, lo=None, hi=None, lo_incl: bool = True, hi_incl: bool = True
                   ) -> np.ndarray: ...

    def range_scan(self, lo=None, hi=None, lo_incl: bool = True, hi_incl: bool = True,
                   **knobs: Any) -> ScanIterator: ...
