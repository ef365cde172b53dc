"""`RowFilter`: the rows one query may return, evaluated once and handed to every access path.

A query's filter is evaluated against its snapshot exactly once (unidb/query/filter.py,
`row_filter`); the result is this object, and every access path reads it in the form it needs:

    flat scan (index/flat/exact.py)     allows(part.row_ids): one mask per part
    planner (query/plan.py, operators)  count (path choice, explain), row_ids() (exact scan of
                                        the matches), allows(ids) (index stream, post-filter),
                                        mask (the exact finish over unseen matches)
    text / sparse (index/sparse)        allows(candidate row ids) per segment
    fusion, multi-vector                allows(candidate row ids)

Row ids are dense and never reused, so the allowed rows are a bool mask over row ids
0..size-1 (size = the snapshot's next row id). A row id at or past `size` belongs to a commit
newer than the snapshot (an index may already hold it) and is never allowed.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# What a caller outside the engine may still pass an index instead of a RowFilter.
Allow = Callable[[np.ndarray], np.ndarray]


class RowFilter:
    """The allowed row ids of one query as a mask over row ids, with their exact count.

    `driven_by` says how the rows were found when the filter was not evaluated on every row
    (a sorted index range that selects few rows, then the filter on those rows only)."""

    __slots__ = ("mask", "count", "driven_by", "_rows")

    def __init__(self, mask: np.ndarray, count: int | None = None, *,
                 driven_by: str | None = None, rows: np.ndarray | None = None):
        self.mask = np.asarray(mask, dtype=bool)
        self.count = int(np.count_nonzero(self.mask)) if count is None else int(count)
        self.driven_by = driven_by
        self._rows = rows

    @classmethod
    def from_rows(cls, row_ids: np.ndarray, size: int, *, driven_by: str | None = None
                  ) -> "RowFilter":
        """The filter allowing exactly `row_ids` (each below `size`) of a snapshot."""
        rows = np.unique(np.asarray(row_ids, dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= size):
            raise ValueError(f"row ids must lie in 0..{size - 1}, got {rows[0]}..{rows[-1]}")
        mask = np.zeros(int(size), dtype=bool)
        mask[rows] = True
        return cls(mask, len(rows), driven_by=driven_by, rows=rows)

    @property
    def size(self) -> int:
        """Row ids below this many are in the snapshot the filter was evaluated on."""
        return len(self.mask)

    def allows(self, row_ids: np.ndarray) -> np.ndarray:
        """One bool per row id: allowed (live in the snapshot and matching the filter)."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        inside = (row_ids >= 0) & (row_ids < len(self.mask))
        if inside.all():
            return self.mask[row_ids]
        out = np.zeros(len(row_ids), dtype=bool)
        out[inside] = self.mask[row_ids[inside]]
        return out

    def row_ids(self) -> np.ndarray:
        """The allowed row ids, ascending."""
        if self._rows is None:
            self._rows = np.flatnonzero(self.mask).astype(np.int64, copy=False)
        return self._rows

    def __repr__(self) -> str:
        how = f", driven by {self.driven_by}" if self.driven_by else ""
        return f"RowFilter({self.count:,} of {self.size:,} row ids{how})"


def allowed(allow: "RowFilter | Allow | None", row_ids: np.ndarray) -> np.ndarray | None:
    """What `allow` says about `row_ids` (None: no restriction). Index methods take a RowFilter
    from the engine, or a plain `allow(row_ids) -> bool mask` from a caller of the index."""
    if allow is None:
        return None
    if isinstance(allow, RowFilter):
        return allow.allows(row_ids)
    return np.asarray(allow(np.asarray(row_ids, dtype=np.int64)), dtype=bool)


__all__ = ["RowFilter", "Allow", "allowed"]
