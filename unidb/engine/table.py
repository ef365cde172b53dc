"""`TableEngine`: one open table — its store, its indexes, its primary-key map — and the one
path every write takes.

A write runs these steps in this order, the last five under the engine's write lock (the
model is LevelDB's `DBImpl::Write`; docs/architecture.md, "How a write flows"):

1. validate: `Schema.to_batch` turns any input into one Arrow batch; under the lock the key
   map rejects duplicate keys (`add`) and a delete or update finds the row ids it replaces.
   A failure raises and nothing happened.
2. log: `TableStore.log` gives the new rows their row ids and appends one WAL record (fsynced
   in `sync` mode). This is the commit point: if it raises (`StorageError`: disk full, I/O
   error) nothing happened; once it returns the write has happened, and nothing after it
   makes the call raise except a failed apply (3).
3. apply: `TableStore.apply` adds the record to the in-memory rows and tombstones and returns
   the new `TableState`, not yet visible to reads. If it raises, the table refuses writes
   until it is reopened (the log holds the write and a reopen replays it).
4. index: `IndexSet.apply` feeds the deleted row ids and the new rows to every index. An
   index's failure does not fail the write: that index is rebuilt from the new state's rows,
   or, if the rebuild fails too, taken out of service and reported (`stats()["broken_indexes"]`,
   `IndexSet.stats`, the log; searches that need it raise).
5. publish: `TableStore.publish` makes the new state the one reads get, so a reader never
   sees rows an index lacks. The key map (`engine/keys.py`) reads its keys from the state
   it is asked about, so it holds the write from here on without being told.
6. `TableStore.after_write` runs the automatic checkpoint (after which the indexes save
   their snapshots); failures there are logged and retried, never the write's.

The store never calls up into the engine; the engine is the only caller of its write steps.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from unidb.engine import execute
from unidb.engine.indexes import IndexSet
from unidb.engine.keys import KeyMap
from unidb.engine.source import TableSource
from unidb.errors import ValidationError
from unidb.options import DEFAULT, Options
from unidb.query.filter import checked_filter, part_masks
from unidb.query.request import SearchRequest, select_columns
from unidb.query.result import SearchResult, empty_table
from unidb.schema import Schema
from unidb.storage import backup
from unidb.storage.parts import ROWID, Part, TableState
from unidb.storage.table_store import TableStore


class TableEngine:
    """One open table, shared by every handle on its database in this process. Background
    threads (compaction, index rebalancing) reach the store and the indexes, never a handle,
    so dropping the last handle can close the database."""

    def __init__(self, name: str, folder: Path, read_only: bool, durability: str,
                 options: Options = DEFAULT):
        self.name = name
        self.options = options
        # The one write lock of this table: writes, index definition changes, checkpoints and
        # the store's compaction swap all take it (the store is given it, not the reverse).
        self._lock = threading.RLock()
        self.store = TableStore.open(folder, read_only=read_only, durability=durability,
                                     lock=self._lock, options=options.storage)
        try:
            self.schema = Schema.from_json(self.store.schema_json)
            pk = self.schema.primary_key
            self.keys = KeyMap(pk, pa.types.is_string(self.schema.arrow.field(pk).type))
            self.indexes = IndexSet(self.store, self.schema, self._lock, options.indexes)
        except BaseException:
            self.store.abandon()                 # nothing was written: release files, threads
            raise
        self._pk = self.schema.primary_key
        self.closed = False

    # -- writes ----------------------------------------------------------------------------
    def add(self, rows: Any) -> int:
        """Insert rows; a key that already exists rejects the whole batch. Returns rows added."""
        batch = self.schema.to_batch(rows)
        if not batch.num_rows:
            return 0
        keys = batch.column(self._pk)
        with self._lock:
            found = np.flatnonzero(self.keys.lookup(self.store.state, keys) >= 0)
            if len(found):
                dup = keys[int(found[0])].as_py()
                raise ValidationError(f"primary key {dup!r} already exists in table "
                                      f"{self.name!r}; use upsert() to replace rows")
            self._write(None, batch)
        return batch.num_rows

    def upsert(self, rows: Any) -> dict:
        """Insert rows, replacing existing rows with the same key. Returns counts."""
        batch = self.schema.to_batch(rows)
        if not batch.num_rows:
            return {"inserted": 0, "updated": 0}
        with self._lock:
            old = self.keys.lookup(self.store.state, batch.column(self._pk))
            old = old[old >= 0]
            self._write(old, batch)
        return {"inserted": batch.num_rows - len(old), "updated": len(old)}

    def delete(self, ids: Any = None, where: Any = None) -> int:
        """Delete rows by primary key and/or filter. Returns the number of rows deleted."""
        if ids is None and where is None:
            raise ValidationError("delete() needs ids= or where= (use where='TRUE' to delete "
                                  "every row)")
        keys = normalise_keys(self.schema, ids) if ids is not None else None
        expr = checked_filter(where, self.schema) if where is not None else None
        with self._lock:
            state = self.store.state
            found = []
            if keys is not None:
                by_key = self.keys.lookup(state, keys)
                found.append(by_key[by_key >= 0])
            if expr is not None:
                found.append(self.matching_rowids(state, expr))
            rowids = np.unique(np.concatenate(found))
            if not len(rowids):
                return 0
            self._write(rowids, None)
        return len(rowids)

    def update(self, where: Any = None, values: dict | None = None) -> int:
        """Set columns to `values` on every row matching `where` (all rows when None)."""
        if not values or not isinstance(values, dict):
            raise ValidationError("update() needs values={column: new value, ...}")
        if self._pk in values:
            raise ValidationError(f"update() cannot change the primary key {self._pk!r}; "
                                  f"delete the row and add it with the new key")
        expr = checked_filter(where, self.schema) if where is not None else None
        # Validate the new values once (as a one-row partial batch) before touching anything.
        probe = self.schema.to_batch({c: [v] for c, v in values.items()}, partial=True)
        with self._lock:
            state = self.store.state
            rowids = self.matching_rowids(state, expr)
            if not len(rowids):
                return 0
            old = state.take(rowids).drop_columns([ROWID])
            for name in probe.schema.names:
                col = probe.column(name)
                repeated = col.take(pa.array(np.zeros(len(rowids), dtype=np.int64)))
                i = old.schema.get_field_index(name)
                old = old.set_column(i, old.schema.field(i), repeated)
            batch = old.combine_chunks().to_batches()[0] if old.num_rows else None
            self._write(rowids, batch)
        return len(rowids)

    def _write(self, deletes: np.ndarray | None, batch: pa.RecordBatch | None) -> None:
        """Steps 2-6 of the module docstring for one validated write: tombstone `deletes`,
        insert `batch`. The caller holds the write lock. The key map needs no telling: it
        reads keys from the published state."""
        logged = self.store.log(deletes, batch)        # the commit point
        if logged is None:
            return
        state = self.store.apply(logged)
        try:
            self.indexes.apply(state, logged.commit)   # never raises for an index's failure
        finally:
            # Even after an interrupt mid-feed: the write is durable and applied, and the
            # indexes it did not reach were taken out of service. The key map reads the
            # published state, so it must hold this write, or a later add could log a
            # duplicate.
            self.store.publish(state)
        checkpointed = self.store.after_write()
        if checkpointed is not None:
            self.indexes.checkpointed(checkpointed)

    # -- reads -----------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> SearchResult:
        """Run a search request on one snapshot with the indexes at that snapshot."""
        return execute.run(request, self)

    def data_source(self) -> TableSource:
        """The latest snapshot (indexes caught up to it) as the query operators' DataSource."""
        return TableSource(self, self.indexes.current_state())

    def live_rows(self) -> int:
        return self.store.state.live_rows

    def get(self, ids: Any, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows by primary key, in the order asked; keys not present are skipped."""
        keys = normalise_keys(self.schema, ids)
        cols = select_columns(self.schema, columns)
        state = self.store.state
        rowids = self.keys.lookup(state, keys)
        rowids = rowids[rowids >= 0]
        if not len(rowids):
            return empty_table(self.schema, cols)
        return state.take(rowids, cols)

    def count(self, where: Any = None) -> int:
        """Number of live rows, optionally matching a filter."""
        if where is None:
            return self.store.state.live_rows
        expr = checked_filter(where, self.schema)
        with self.indexes.snapshot() as state:       # MATCH() reads the text index
            return int(sum(int(m.sum()) for _, m in self.masks(state, expr)))

    def scan(self, columns: Sequence[str] | None = None, where: Any = None) -> pa.Table:
        """All live rows (optionally filtered) as one Arrow table."""
        cols = select_columns(self.schema, columns)
        expr = checked_filter(where, self.schema) if where is not None else None
        pieces = []
        with self.indexes.snapshot() as state:       # MATCH() reads the text index
            for part, mask in self.masks(state, expr):
                t = part.table.select(cols)
                pieces.append(t if mask.all() else t.filter(pa.array(mask)))
        if not pieces:
            return empty_table(self.schema, cols)
        return pa.concat_tables(pieces)

    def masks(self, state: TableState, expr) -> Iterable[tuple[Part, np.ndarray]]:
        """(part, mask of its live rows matching `expr`) for each non-empty part of `state`."""
        return part_masks(state, expr, context=self.indexes)

    def matching_rowids(self, state: TableState, expr) -> np.ndarray:
        """Row ids of the live rows of `state` matching `expr` (every live row when None)."""
        got = [part.row_ids[mask] for part, mask in self.masks(state, expr)]
        return np.concatenate(got) if got else np.zeros(0, np.int64)

    # -- indexes and maintenance -----------------------------------------------------------
    def create_index(self, column: str, kind: str | None = None, **options: Any) -> None:
        self.indexes.create(column, kind, **options)

    def drop_index(self, column: str) -> None:
        self.indexes.drop(column)

    def flush(self) -> None:
        """Checkpoint the in-memory rows into a segment, then save the index snapshots that
        are due (a no-op when nothing was written since the last checkpoint)."""
        with self._lock:
            checkpointed = self.store.flush()
            if checkpointed is not None:
                self.indexes.checkpointed(checkpointed)

    def compact(self) -> int:
        """Checkpoint, then rewrite segments to drop deleted rows; returns groups rewritten.
        The rewrite runs without the write lock (the store takes it for the swap only)."""
        self.flush()
        return self.store.compact()

    def stats(self) -> dict:
        state = self.store.state
        return {"rows": state.live_rows, "parts": len(state.parts),
                "segments": len(self.store.manifest.segments),
                "deleted_pending": len(state.tombstones), "lsn": state.lsn,
                "disk_bytes": self.store.disk_bytes(),
                "broken_indexes": self.indexes.health()}

    def copy_files(self, target: Path) -> dict:
        """Checkpoint, then copy this table's files into the new folder `target`, consistent
        as of one write: writers wait for the copy, readers do not (the backup's step for one
        table, `storage/backup.py`)."""
        with self._lock:
            self.flush()
            return backup.copy_table(self.store, target)

    def close(self, checkpoint: bool) -> None:
        """Checkpoint (or not: a drop, a simulated crash) and release files and threads."""
        self.closed = True
        # Each step runs even if the one before failed (a full disk at close): the rows are
        # safe in the WAL, and files and threads must still be released.
        try:
            if checkpoint and not self.store.read_only:
                self.store.flush()                   # rows first, then index snapshots
        finally:
            try:
                self.indexes.close(checkpoint)
            finally:
                if checkpoint:
                    self.store.close()
                else:
                    self.store.abandon()


# -- argument checks that depend only on the schema (the api's handles use them too) --------
def normalise_keys(schema: Schema, ids: Any) -> pa.Array:
    """`ids` checked as primary key values exactly as `add` checks them (one rule), as an
    Arrow array of the key's type."""
    if ids is None:
        raise ValidationError("ids must be given")
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable) \
            or (isinstance(ids, np.ndarray) and ids.ndim == 0):
        ids = [ids]
    if not isinstance(ids, (list, np.ndarray, pa.Array, pa.ChunkedArray)):
        ids = list(ids)
    pk = schema.primary_key
    return schema[pk].convert(pk, ids, len(ids))
