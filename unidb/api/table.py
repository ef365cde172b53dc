"""`Table`: rows in, rows out — add/upsert/delete/update/get/count/scan and `search()`.

The table validates input against its schema, keeps the primary key -> row id map, and turns
each user write into exactly one durable commit of the storage layer (deletes + inserts), so a
write is applied entirely or not at all. Reads work on an immutable `TableState` snapshot.
"""
from __future__ import annotations

import threading
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from unidb.errors import ClosedError, ValidationError
from unidb.query.filter import checked_filter, part_masks
from unidb.query.request import empty_table, select_columns, vector_column
from unidb.schema import Schema, Vector
from unidb.storage.parts import ROWID, Part, TableState
from unidb.storage.table_store import TableStore


def _name_arg(column: Any) -> str:
    if not isinstance(column, str):
        raise ValidationError(f"column must be a column name (str), got {column!r}")
    return column


class TableCore:
    """One open table, shared by every handle on its database in this process: the store, its
    indexes and the primary key map. Background threads (compaction, index rebalancing) reach
    this object and never a handle, so dropping the last handle can close the database."""

    def __init__(self, name: str, store: TableStore):
        self.name = name
        # `_store` and `schema` are what IndexSet reads from the object it indexes.
        self._store = store
        self.schema = Schema.from_json(store.schema_json)
        self.closed = False
        self._keys: dict[Any, int] | None = None     # primary key -> row id (live rows)
        self._keys_lsn = -1
        self._keys_lock = threading.Lock()
        from unidb.api.indexes import IndexSet
        self._indexes = IndexSet(self)

    def key_map(self) -> dict[Any, int]:
        """The key -> row id map for the latest state (rebuilt after another process wrote)."""
        state = self._store.state
        pk = self.schema.primary_key
        with self._keys_lock:
            if self._keys is None or (self._store.read_only and self._keys_lsn != state.lsn):
                keys: dict[Any, int] = {}
                for part in state.parts:
                    live = state.live_mask(part)
                    ks = part.table.column(pk)
                    ids = part.row_ids
                    if not live.all():
                        ks = ks.filter(pa.array(live))
                        ids = ids[live]
                    keys.update(zip(ks.to_pylist(), ids.tolist()))
                self._keys = keys
                self._keys_lsn = state.lsn
            return self._keys

    def remember(self, keys: list, first_rowid: int) -> None:
        """Record the row ids a commit gave `keys` (called under the write lock)."""
        kmap = self.key_map()
        kmap.update(zip(keys, range(first_rowid, first_rowid + len(keys))))
        self._keys_lsn = self._store.state.lsn

    def close(self, checkpoint: bool) -> None:
        """Checkpoint (or not: a drop, a simulated crash) and release files and threads."""
        self.closed = True
        # Each step runs even if the one before failed (a full disk at close): the rows are
        # safe in the WAL, and files and threads must still be released.
        try:
            if checkpoint and not self._store.read_only:
                self._store.flush()                  # rows first, then index snapshots
        finally:
            try:
                self._indexes.close(checkpoint)
            finally:
                if checkpoint:
                    self._store.close()
                else:
                    self._store.abandon()


class Table:
    """One table of an embedded database. Thread-safe; obtain it from `Database`.

    A Table belongs to the `Database` handle it came from: once that handle is closed (or the
    table dropped) every method raises `ClosedError`. Handles on one database share one
    `TableCore`, so a write through one is seen at once through the others."""

    def __init__(self, db, core: TableCore):
        self._db = db                                # keeps its handle (and the lock) alive
        self._core = core
        self.name = core.name
        self.schema = core.schema
        self._pk = self.schema.primary_key

    def _open_core(self) -> TableCore:
        """The shared table, or ClosedError: the one check every method passes through (the
        `_store` and `_indexes` properties below call it)."""
        if self._db._closed:
            raise ClosedError(f"table {self.name!r}: its database handle on "
                              f"{str(self._db.path)!r} was closed; open it again with "
                              f"unidb.connect() and open_table({self.name!r})")
        core = self._core
        if core.closed:
            raise ClosedError(f"table {self.name!r} was dropped or closed; open_table("
                              f"{self.name!r}) again (after re-creating it if it was dropped)")
        return core

    @property
    def _store(self) -> TableStore:
        return self._open_core()._store

    @property
    def _indexes(self):
        return self._open_core()._indexes

    # -- introspection ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self._store.state.live_rows

    def __repr__(self) -> str:
        try:
            rows = len(self)
        except ClosedError:
            return f"unidb.Table({self.name!r}, closed)"
        return f"unidb.Table({self.name!r}, rows={rows}, schema={self.schema!r})"

    @property
    def primary_key(self) -> str:
        return self._pk

    def _state(self) -> TableState:
        # Read-only processes: the latest state with the indexes caught up to it.
        return self._indexes.current_state()

    # -- primary key map -------------------------------------------------------------------
    def _normalise_keys(self, ids: Any) -> list:
        """`ids` checked as primary key values exactly as `add` checks them (one rule)."""
        if ids is None:
            raise ValidationError("ids must be given")
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable) \
                or (isinstance(ids, np.ndarray) and ids.ndim == 0):
            ids = [ids]
        if not isinstance(ids, (list, np.ndarray, pa.Array, pa.ChunkedArray)):
            ids = list(ids)
        arr = self.schema[self._pk].convert(self._pk, ids, len(ids))
        return arr.to_pylist()

    # -- writes ----------------------------------------------------------------------------
    def add(self, rows: Any) -> int:
        """Insert rows; a key that already exists rejects the whole batch. Returns rows added."""
        core = self._open_core()       # once: a write that committed must not raise after
        batch = self.schema.to_batch(rows)
        if not batch.num_rows:
            return 0
        keys = batch.column(self._pk).to_pylist()
        with core._store._lock:
            kmap = core.key_map()
            dup = next((k for k in keys if k in kmap), None)
            if dup is not None:
                raise ValidationError(f"primary key {dup!r} already exists in table "
                                      f"{self.name!r}; use upsert() to replace rows")
            state = core._store.commit(None, batch)
            core.remember(keys, state.next_rowid - len(keys))
        return len(keys)

    def upsert(self, rows: Any) -> dict:
        """Insert rows, replacing existing rows with the same key. Returns counts."""
        core = self._open_core()
        batch = self.schema.to_batch(rows)
        if not batch.num_rows:
            return {"inserted": 0, "updated": 0}
        keys = batch.column(self._pk).to_pylist()
        with core._store._lock:
            kmap = core.key_map()
            old = [kmap[k] for k in keys if k in kmap]
            state = core._store.commit(np.array(old, dtype=np.int64), batch)
            core.remember(keys, state.next_rowid - len(keys))
        return {"inserted": len(keys) - len(old), "updated": len(old)}

    def delete(self, ids: Any = None, where: Any = None) -> int:
        """Delete rows by primary key and/or filter. Returns the number of rows deleted."""
        core = self._open_core()
        if ids is None and where is None:
            raise ValidationError("delete() needs ids= or where= (use where='TRUE' to delete "
                                  "every row)")
        keys = self._normalise_keys(ids) if ids is not None else None
        expr = self._filter(where) if where is not None else None
        with core._store._lock:
            state = core._store.state
            kmap = core.key_map()
            rowids = set()
            if keys is not None:
                rowids.update(kmap[k] for k in keys if k in kmap)
            if expr is not None:
                rowids.update(self._matching_rowids(state, expr).tolist())
            if not rowids:
                return 0
            arr = np.fromiter(rowids, dtype=np.int64, count=len(rowids))
            gone = state.take(np.sort(arr), [self._pk]).column(0).to_pylist()
            core._store.commit(arr, None)
            for k in gone:
                kmap.pop(k, None)
        return len(arr)

    def update(self, where: Any = None, values: dict | None = None) -> int:
        """Set columns to `values` on every row matching `where` (all rows when None)."""
        core = self._open_core()
        if not values or not isinstance(values, dict):
            raise ValidationError("update() needs values={column: new value, ...}")
        if self._pk in values:
            raise ValidationError(f"update() cannot change the primary key {self._pk!r}; "
                                  f"delete the row and add it with the new key")
        expr = self._filter(where) if where is not None else None
        # Validate the new values once (as a one-row partial batch) before touching anything.
        probe = self.schema.to_batch({c: [v] for c, v in values.items()}, partial=True)
        with core._store._lock:
            state = core._store.state
            rowids = self._matching_rowids(state, expr) if expr is not None else \
                self._all_rowids(state)
            if not len(rowids):
                return 0
            old = state.take(rowids).drop_columns([ROWID])
            for name in probe.schema.names:
                col = probe.column(name)
                repeated = col.take(pa.array(np.zeros(len(rowids), dtype=np.int64)))
                i = old.schema.get_field_index(name)
                old = old.set_column(i, old.schema.field(i), repeated)
            batch = old.combine_chunks().to_batches()[0] if old.num_rows else None
            state = core._store.commit(rowids, batch)
            keys = old.column(self._pk).to_pylist()
            core.remember(keys, state.next_rowid - len(keys))
        return len(rowids)

    # -- reads -----------------------------------------------------------------------------
    def get(self, ids: Any, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows by primary key, in the order asked; keys not present are skipped."""
        keys = self._normalise_keys(ids)
        cols = self._columns(columns)
        core = self._open_core()
        state = core._store.state
        kmap = core.key_map()
        rowids = np.array([kmap[k] for k in keys if k in kmap], dtype=np.int64)
        if not len(rowids):
            return self._empty(cols)
        return state.take(rowids, cols)

    def count(self, where: Any = None) -> int:
        """Number of live rows, optionally matching a filter."""
        if where is None:
            return self._store.state.live_rows
        expr = self._filter(where)
        with self._indexes.snapshot() as state:      # MATCH() reads the text index
            return int(sum(int(m.sum()) for _, m in self._masks(state, expr)))

    def to_arrow(self, columns: Sequence[str] | None = None, where: Any = None) -> pa.Table:
        """All live rows (optionally filtered) as one Arrow table."""
        cols = self._columns(columns)
        expr = self._filter(where) if where is not None else None
        pieces = []
        with self._indexes.snapshot() as state:      # MATCH() reads the text index
            for part, mask in self._masks(state, expr):
                t = part.table.select(cols)
                pieces.append(t if mask.all() else t.filter(pa.array(mask)))
        if not pieces:
            return self._empty(cols)
        return pa.concat_tables(pieces)

    def to_pandas(self, columns: Sequence[str] | None = None, where: Any = None):
        return self.to_arrow(columns, where).to_pandas()

    def search(self, vector: Any = None, *args: Any, column: str | None = None,
               text: str | None = None, sparse: Any = None, vectors: dict | None = None,
               weights: dict | None = None, text_column: str | None = None,
               sparse_column: str | None = None, **unknown: Any):
        """Start a search: vector (kNN), text (BM25), sparse, hybrid or multi-vector.

        Columns are inferred when the table has one of the kind; else pass column= (vector),
        text_column= or sparse_column=."""
        from unidb.api.search import SearchBuilder, check_search_arguments
        self._open_core()                 # a closed table says so now, not when the search runs
        check_search_arguments(args, unknown)
        return SearchBuilder(self, vector=vector, column=column, text=text, sparse=sparse,
                             vectors=vectors, weights=weights, text_column=text_column,
                             sparse_column=sparse_column)

    # -- indexes and maintenance -----------------------------------------------------------
    def create_index(self, column: str, kind: str | None = None, **options: Any) -> None:
        """Build an index on a column: kind="partition" (vectors), "sorted" (scalars), ..."""
        self._indexes.create(_name_arg(column), kind, **options)

    def drop_index(self, column: str) -> None:
        self._indexes.drop(_name_arg(column))

    def list_indexes(self) -> dict:
        return self._indexes.definitions()

    def index_stats(self, column: str) -> dict:
        return self._indexes.stats(_name_arg(column))

    def compact(self) -> int:
        """Rewrite segments to drop deleted rows now (also runs in the background)."""
        self._store.flush()
        return self._store.compact()

    def flush(self) -> None:
        """Checkpoint in-memory rows into a segment (durability does not depend on it)."""
        self._store.flush()

    def stats(self) -> dict:
        state = self._store.state
        return {"rows": state.live_rows, "parts": len(state.parts),
                "segments": len(self._store.manifest.segments),
                "deleted_pending": len(state.tombstones), "lsn": state.lsn,
                "disk_bytes": self._store.disk_bytes()}

    def _close(self, checkpoint: bool) -> None:
        # Tests simulate a crash with _close(checkpoint=False); databases close TableCores.
        self._core.close(checkpoint)

    # -- helpers ---------------------------------------------------------------------------
    def _filter(self, where: Any):
        """A `where=` argument as a filter tree checked against this table's schema."""
        return checked_filter(where, self.schema)

    def _masks(self, state: TableState, expr) -> Iterable[tuple[Part, np.ndarray]]:
        return part_masks(state, expr, context=self._indexes)

    def _matching_rowids(self, state: TableState, expr) -> np.ndarray:
        got = [part.row_ids[mask] for part, mask in self._masks(state, expr)]
        return np.concatenate(got) if got else np.zeros(0, np.int64)

    def _all_rowids(self, state: TableState) -> np.ndarray:
        return self._matching_rowids(state, None)

    def _columns(self, columns: Sequence[str] | None) -> list[str]:
        return select_columns(self.schema, columns)

    def _empty(self, cols: list[str]) -> pa.Table:
        return empty_table(self.schema, cols)

    def vector_column(self, column: str | None) -> tuple[str, Vector]:
        """Resolve the vector column a search targets (inferred when there is only one)."""
        return vector_column(self.schema, column, self.name)
