"""`TableSource`: one table snapshot seen through the executor's DataSource protocol.

The query layer (unidb/query/planner.py) plans against row masks over the row-id space,
random access to vectors by row id, and the table's indexes. This adapter answers those
questions from an immutable `TableState` (so one query sees one consistent moment) plus the
table's `IndexSet`.
"""
from __future__ import annotations

import threading

import numpy as np

from unidb.errors import QueryError
from unidb.index.flat.exact import live_vectors, part_vectors
from unidb.index.rowfilter import RowFilter
from unidb.query.filter import row_filter
from unidb.schema import Vector
from unidb.storage.parts import TableState

# Whole-column copies made for flat scans are kept for the latest state only.
_flat_cache: dict = {}
_flat_lock = threading.Lock()


class TableSource:
    def __init__(self, table, state: TableState):
        self.table = table
        self.state = state
        self.planner_options = table.options.planner
        self._live: np.ndarray | None = None

    # -- row masks -------------------------------------------------------------------------
    def live_rowmask(self) -> np.ndarray:
        """bool over row ids 0..next_rowid-1: True where the row exists and is not deleted."""
        if self._live is None:
            mask = np.zeros(self.state.next_rowid, dtype=bool)
            for part in self.state.parts:
                if part.num_rows:
                    live = self.state.live_mask(part)
                    mask[part.row_ids[live]] = True
            self._live = mask
        return self._live

    def row_filter(self, expr) -> RowFilter:
        """The live rows that satisfy `expr` (every live row when None), evaluated once."""
        if expr is None:
            return RowFilter(self.live_rowmask())
        return row_filter(self.state, expr, self.table.indexes)

    def live_count(self) -> int:
        return self.state.live_rows

    # -- vectors ---------------------------------------------------------------------------
    def vector_column(self, name: str) -> tuple[int, str]:
        ctype = self.table.schema.columns.get(name)
        if not isinstance(ctype, Vector):
            raise QueryError(f"column {name!r} is not a Vector column")
        return int(ctype.dim), ctype.metric

    def vectors(self, name: str, row_ids: np.ndarray) -> np.ndarray:
        """(n, dim) float32 rows by row id, in the order given."""
        dim, metric = self.vector_column(name)
        row_ids = np.asarray(row_ids, dtype=np.int64)
        out = np.empty((len(row_ids), dim), dtype=np.float32)
        filled = np.zeros(len(row_ids), dtype=bool)
        if not len(row_ids):
            return out
        lo, hi = row_ids.min(), row_ids.max()
        for part in self.state.parts:
            if not part.num_rows or part.max_rowid < lo or part.min_rowid > hi:
                continue
            found, offsets = part.locate(row_ids)
            if found.any():
                matrix, _, _ = part_vectors(part, name, metric)
                out[found] = matrix[offsets]
                filled |= found
        if not filled.all():
            missing = row_ids[~filled][:5].tolist()
            raise QueryError(f"row ids {missing} are not in this snapshot")
        return out

    def flat_rows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(row ids, matrix) of every live row with a vector, in row-id order."""
        _, metric = self.vector_column(name)
        parts = [p for p in self.state.parts if p.num_rows]
        key = (id(self.table), name, tuple(id(p) for p in parts), self.state.tomb_version)
        with _flat_lock:
            hit = _flat_cache.get(key)
        if hit is not None:
            return hit
        ids, matrix = live_vectors(self.state, name, metric)
        if not len(ids):
            dim, _ = self.vector_column(name)
            matrix = np.zeros((0, dim), np.float32)
        out = (ids, matrix)
        with _flat_lock:
            _flat_cache.clear()
            _flat_cache[key] = out
        return out

    # -- indexes ---------------------------------------------------------------------------
    # In the writer process an index is fed by every commit, so during a query it may already
    # hold rows newer than this snapshot; the query layer indexes row masks of this snapshot's
    # size with index row ids, so those rows are dropped here. (Read-only processes pin their
    # indexes to the snapshot, see IndexSet.snapshot; the views then pass everything through.)
    def vector_index(self, name: str):
        idx = self.table.indexes.vector_index(name)
        return None if idx is None else _SnapshotVectorIndex(idx, self.state.next_rowid)

    def scalar_index(self, name: str):
        idx = self.table.indexes.scalar_index(name)
        return None if idx is None else _SnapshotScalarIndex(idx, self.state.next_rowid)


class _SnapshotView:
    """An index seen from a snapshot whose row ids are below `limit`."""

    def __init__(self, index, limit: int):
        self._index = index
        self._limit = limit

    def __getattr__(self, name):
        return getattr(self._index, name)

    def __len__(self) -> int:
        return len(self._index)


class _SnapshotVectorIndex(_SnapshotView):
    def search(self, queries, k, **knobs):
        ids, dist = self._index.search(queries, k, **knobs)
        late = ids >= self._limit
        if late.any():
            ids, dist = ids.copy(), dist.copy()
            ids[late], dist[late] = -1, np.inf
        return ids, dist

    def scan(self, query, **knobs):
        return _SnapshotScan(self._index.scan(query, **knobs), self._limit)


class _SnapshotScan:
    def __init__(self, scan, limit: int):
        self._scan = scan
        self._limit = limit

    def __getattr__(self, name):
        return getattr(self._scan, name)

    def next_batch(self):
        batch = self._scan.next_batch()
        if batch is not None and len(batch.row_ids) and batch.row_ids.max() >= self._limit:
            keep = batch.row_ids < self._limit
            batch = type(batch)(batch.row_ids[keep], batch.distances[keep])
        return batch


class _SnapshotScalarIndex(_SnapshotView):
    def range_rows(self, *args, **kwargs):
        rows = self._index.range_rows(*args, **kwargs)
        return rows[rows < self._limit] if len(rows) and rows.max() >= self._limit else rows
