"""Parts and snapshots: the immutable, consistent view of a table that readers query.

A `Part` is a block of rows — a memory-mapped segment, or a chunk of the in-memory table —
with strictly increasing row ids. A `TableState` is one committed moment of a table: its parts
in row-id order plus the tombstone bitmap. Writers publish a new state per commit; readers take
a reference and are never blocked or shown half a write.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pyarrow as pa
from pyroaring import FrozenBitMap

ROWID = "_rowid"


class Part:
    """An immutable block of rows. `cache` holds derived arrays (norms, masks) for upper layers."""

    __slots__ = ("table", "row_ids", "segment", "cache", "__weakref__")

    def __init__(self, table: pa.Table, segment: str | None = None):
        self.table = table
        col = table.column(ROWID)
        chunk = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        self.row_ids: np.ndarray = chunk.to_numpy(zero_copy_only=False)
        self.segment = segment
        self.cache: dict = {}

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def min_rowid(self) -> int:
        return int(self.row_ids[0]) if len(self.row_ids) else -1

    @property
    def max_rowid(self) -> int:
        return int(self.row_ids[-1]) if len(self.row_ids) else -1

    def locate(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the given row ids present in this part: (mask over input, offsets)."""
        pos = np.searchsorted(self.row_ids, row_ids)
        pos_c = np.minimum(pos, max(len(self.row_ids) - 1, 0))
        found = (pos < len(self.row_ids)) & (self.row_ids[pos_c] == row_ids) \
            if len(self.row_ids) else np.zeros(len(row_ids), dtype=bool)
        return found, pos_c[found]


@dataclass(frozen=True)
class TableState:
    """One committed, immutable moment of a table."""
    parts: tuple[Part, ...]
    tombstones: FrozenBitMap
    tomb_version: int          # changes whenever tombstones change (cache key)
    next_rowid: int
    lsn: int                   # last applied WAL record
    live_rows: int

    def live_mask(self, part: Part) -> np.ndarray:
        """Boolean mask of the part's rows not tombstoned (cached per tombstone version)."""
        key = ("live", self.tomb_version)
        cached = part.cache.get("live")
        if cached is not None and cached[0] == key:
            return cached[1]
        mask = np.ones(part.num_rows, dtype=bool)
        if len(self.tombstones) and part.num_rows:
            lo, hi = part.min_rowid, part.max_rowid
            if self.tombstones.range_cardinality(lo, hi + 1):
                dead = np.frombuffer(self.tombstones.to_array(), dtype=np.uint32)
                dead = dead[(dead >= lo) & (dead <= hi)].astype(np.int64)
                found, offsets = part.locate(dead)
                mask[offsets] = False
        part.cache["live"] = (key, mask)
        return mask

    def is_live(self, row_ids: np.ndarray) -> np.ndarray:
        """Whether each row id exists in this state and is not deleted."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        out = np.zeros(len(row_ids), dtype=bool)
        for part in self.parts:
            found, offsets = part.locate(row_ids)
            if found.any():
                out[found] = self.live_mask(part)[offsets]
        return out

    def take(self, row_ids: np.ndarray, columns: Iterable[str] | None = None) -> pa.Table:
        """Rows by row id, in the order given (ids must exist in this state)."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if not self.parts:
            raise ValueError("empty table")
        cols = list(columns) if columns is not None else None
        pieces, order = [], []
        for part in self.parts:
            found, offsets = part.locate(row_ids)
            if found.any():
                t = part.table if cols is None else part.table.select(cols)
                pieces.append(t.take(pa.array(offsets)))
                order.append(np.flatnonzero(found))
        if not pieces:
            t = self.parts[0].table if cols is None else self.parts[0].table.select(cols)
            return t.slice(0, 0)
        table = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        where = np.concatenate(order)
        if len(where) != len(row_ids):
            raise KeyError("some row ids are not present")
        inverse = np.empty_like(where)
        inverse[where] = np.arange(len(where))
        return table.take(pa.array(inverse))
