"""The indexes of one table: definitions, builds, maintenance on every write, persistence.

Indexes are derived data. The table engine (`engine/table.py`) feeds each one every write
(inserted rows and deleted row ids) under the table's write lock, after the write is logged
and applied and before its state is published (`apply`), so a search never sees rows an index
lacks. Each index saves a snapshot tagged with the row-id watermark it covers (`covered` = the
table's next row id at the save); on open it loads that snapshot and catches up from the table
itself: rows with ids at or past the watermark are added, tombstoned ids below it are deleted
(deletes are idempotent). Row ids are never reused, so the watermark plays the role of a WAL
position — and because catch-up reads the durable rows rather than the log, an index never
forces the log to be kept, and a snapshot may be older than the last checkpoint (indexes save
when they changed enough, not at every checkpoint). A crash at any point leaves the last
complete snapshot plus durable rows.

An index that fails to take a write (the write is durable by then, so it must not fail the
write) is rebuilt from the rows of the new state. One whose rebuild fails too is *broken*:
logged, listed by `health()`, retried at later writes and rebuilt at the next open; meanwhile
vector and sorted searches scan exactly instead, and text and sparse searches that need it
raise (`get`) — never an answer silently missing acknowledged rows.

Text columns (`unidb.Text`) and sparse-vector columns get their inverted index automatically;
vector (`partition`) and scalar (`sorted`) indexes are created with `t.create_index`.

Read-only processes cannot be fed writes (they happen in another process). Their `IndexSet`
follows the rows instead: it remembers the `TableState` its indexes reflect, and every read call
takes its snapshot through `snapshot()`, which first brings the indexes to exactly that state —
rows with ids at or past the old watermark are added, tombstones not yet applied are deleted,
index definitions the writer created or dropped are opened or closed. A query pins the state
for its whole run; catching up to a newer state waits until no query is pinned, so every query
sees its indexes, its filter masks and its result rows at one moment. Readers never write:
snapshots are read from a private copy of the files the index manifest names (the writer's
folder is never cleaned or locked by a reader), partition indexes use memory storage, sorted
indexes are rebuilt from the rows, and a snapshot that cannot be read is rebuilt in memory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from unidb.errors import NotFoundError, QueryError, ReadOnlyError, SchemaError, UnidbError
from unidb.index.contract import Index
from unidb.options import DEFAULT, IndexOptions
from unidb.schema import Schema
from unidb.storage import files
from unidb.storage.parts import ROWID, TableState
from unidb.storage.records import Commit
from unidb.storage.table_store import TableStore

log = logging.getLogger("unidb.indexes")

# Which index kinds each column type accepts; the first is the default.
KINDS = {"vector": ("partition", "flat"), "int64": ("sorted",), "float64": ("sorted",),
         "text": ("text",), "sparse": ("sparse",)}
# Kinds maintained without being asked for (OneSparse: text and sparse postings always live).
AUTOMATIC = {"text": "text", "sparse": "sparse"}
# When an index snapshot is rewritten at a checkpoint: IndexOptions.save_min_changes and
# save_min_fraction (unidb/options.py).
INDEX_DIR_PREFIX = "idx-"
# A read-only process retries loading a snapshot the writer replaced while it was copying.
READ_RETRIES = 5
# Kinds whose searches fall back to an exact scan when the index is broken (same answers,
# slower); a text or sparse search has no such fallback and raises instead.
EXACT_FALLBACK = ("partition", "sorted")


def index_folder(table_folder: Path, column: str) -> Path:
    return Path(table_folder) / f"{INDEX_DIR_PREFIX}{column}"


# -- per-kind adapters: how to build/load each implementation ----------------------------------
class _Kind:
    """Adapter between a column's Arrow values and one index implementation. The index
    itself honours unidb.index.contract.Index (add, delete, save, load, stats, close, len),
    which is all the rest of this module calls."""
    name = ""
    SNAPSHOT = ""          # the file whose presence means a saved snapshot exists

    def has_snapshot(self, folder: Path) -> bool:
        return (folder / self.SNAPSHOT).exists()

    def values(self, column: pa.Array, row_ids: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def build(self, ctype, options: dict, row_ids: np.ndarray, values: Any, folder: Path,
              tuning: IndexOptions):
        """A new index of `values`; `tuning` is the database's IndexOptions."""
        raise NotImplementedError

    def load(self, folder: Path, tuning: IndexOptions):
        """(index, covered) from a saved snapshot."""
        raise NotImplementedError

    # -- readers: load without ever writing into the writer's folder ------------------------
    READER_LOADS = True    # False: a read-only process always builds this kind from the rows

    def snapshot_files(self, manifest: dict) -> list[str]:
        """The files (besides SNAPSHOT) that the snapshot manifest names."""
        raise NotImplementedError

    def reader_manifest(self, manifest: dict) -> dict:
        """The manifest a reader's private copy loads from (e.g. memory storage only)."""
        return manifest

    def load_copy(self, folder: Path, tuning: IndexOptions):
        """(impl, covered) from a private copy of the saved snapshot (read-only processes).

        The index loaders clean their folder (stale temps, files of older generations) and a
        disk-backed partition index writes working files there: a reader doing that in the
        writer's folder would delete files a concurrent save is writing. So a reader copies
        the manifest and exactly the files it names into a temporary folder and loads that.
        A file the writer deleted in between raises FileNotFoundError (the caller retries)."""
        tmp = Path(tempfile.mkdtemp(prefix="unidb-reader-index-"))
        try:
            manifest = files.read_json(folder / self.SNAPSHOT)
            for name in self.snapshot_files(manifest):
                shutil.copyfile(folder / name, tmp / name)
            files.atomic_write_json(tmp / self.SNAPSHOT, self.reader_manifest(manifest))
            return self.load(tmp, tuning)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _chunk(col) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


class _PartitionKind(_Kind):
    name = "partition"
    SNAPSHOT = "partition-index.json"

    def values(self, column, row_ids):
        arr = _chunk(column)
        dim = arr.type.list_size
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            mat = arr.flatten().to_numpy(zero_copy_only=False)
            full = np.zeros((len(arr), dim), np.float32)
            full[valid] = mat.reshape(-1, dim)
            return row_ids[valid], full[valid]
        return row_ids, arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)

    def build(self, ctype, options, row_ids, values, folder, tuning):
        from unidb.index.partition import PartitionIndex, PartitionOptions
        try:
            opts = PartitionOptions(**options).validate()
        except (TypeError, ValueError) as e:
            raise SchemaError(f"bad partition index option: {e}") from None
        if opts.storage == "disk":
            files.ensure_dir(folder)
        idx = PartitionIndex.build(row_ids, values.reshape(-1, ctype.dim), ctype.metric,
                                   options=opts, folder=folder)
        idx.start_rebalancer()
        return idx

    def load(self, folder, tuning):
        from unidb.index.partition import PartitionIndex
        idx, covered = PartitionIndex.load(folder)
        idx.start_rebalancer()
        return idx, covered

    def snapshot_files(self, manifest):
        return list(manifest["files"].values())

    def reader_manifest(self, manifest):
        # a reader's copy lives in memory: disk storage would put working files in the folder
        return {**manifest, "options": {**manifest["options"], "storage": "memory"}}


class _SortedKind(_Kind):
    name = "sorted"
    SNAPSHOT = "sorted.json"

    def values(self, column, row_ids):
        return row_ids, _chunk(column)

    def build(self, ctype, options, row_ids, values, folder, tuning):
        from unidb.index.scalar.sorted_index import SortedIndex
        if options:
            raise SchemaError(f"the sorted index takes no options, got {sorted(options)}")
        return SortedIndex.build(row_ids, values)

    def load(self, folder, tuning):
        from unidb.index.scalar.sorted_index import SortedIndex
        return SortedIndex.load(folder)

    # sorted.json and sorted.npz are replaced one after the other, so a reader could pair a
    # new array with an old watermark; rebuilding from the rows is a single sort anyway.
    READER_LOADS = False


class _InvertedKind(_Kind):
    """Text and sparse indexes: one inverted-index class each, tuned by IndexOptions (segment
    sizes, top-k algorithm: never their results) at build and at load."""
    SNAPSHOT = "index.json"

    def index_class(self):
        raise NotImplementedError

    def new_index(self, ctype, options: dict):
        raise NotImplementedError

    def build(self, ctype, options, row_ids, values, folder, tuning):
        idx = self.new_index(ctype, options)
        self._tune(idx, tuning)
        idx.add(row_ids, values)
        return idx

    def load(self, folder, tuning):
        idx, covered = self.index_class().load(folder)
        self._tune(idx, tuning)
        return idx, covered

    @staticmethod
    def _tune(idx, tuning: IndexOptions) -> None:
        idx.tune(buffer_docs=tuning.text_buffer_docs, max_segments=tuning.text_max_segments,
                 topk=tuning.text_topk)

    def snapshot_files(self, manifest):
        names = [n for e in manifest["segments"] for n in (e["file"], e["live"])]
        return names + [v for k, v in manifest.items() if k.endswith("_file") and v]


class _TextKind(_InvertedKind):
    name = "text"

    def values(self, column, row_ids):
        return row_ids, _chunk(column).to_pylist()

    def index_class(self):
        from unidb.index.sparse import TextIndex
        return TextIndex

    def new_index(self, ctype, options):
        from unidb.index.sparse import Analyzer
        opts = dict(options)
        analyzer = Analyzer.from_json(opts.pop("analyzer")) if "analyzer" in opts else \
            Analyzer.named(ctype.analyzer)
        try:
            return self.index_class()(analyzer=analyzer, **opts)
        except TypeError as e:
            raise SchemaError(f"bad text index option: {e}") from None


class _SparseKind(_InvertedKind):
    name = "sparse"

    def values(self, column, row_ids):
        out = []
        for v in _chunk(column).to_pylist():
            out.append(None if v is None else (np.asarray(v["indices"], np.int32),
                                               np.asarray(v["values"], np.float32)))
        return row_ids, out

    def index_class(self):
        from unidb.index.sparse import SparseIndex
        return SparseIndex

    def new_index(self, ctype, options):
        return self.index_class()(**options)


ADAPTERS: dict[str, _Kind] = {k.name: k for k in (_PartitionKind(), _SortedKind(),
                                                   _TextKind(), _SparseKind())}


def _ids_below(bitmap, limit: int) -> np.ndarray:
    """The row ids in a tombstone bitmap that are below `limit`, as int64."""
    ids = np.frombuffer(bitmap.to_array(), dtype=np.uint32).astype(np.int64)
    return ids[ids < limit]


def _plain_options(column: str, options: dict) -> dict:
    """Index options as plain JSON values (numpy scalars unwrapped): they go in the manifest."""
    out = {}
    for name, value in options.items():
        if isinstance(value, np.generic):
            value = value.item()
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise SchemaError(f"index option {name}={value!r} on column {column!r} must be a "
                              f"finite number, a string, a bool or None") from None
        out[name] = value
    return out


@dataclasses.dataclass
class IndexHandle:
    """One live index of a column."""
    column: str
    kind: str
    options: dict
    impl: Index                        # the contract: unidb/index/contract.py
    covered: int                       # next row id the last saved snapshot covers
    changes: int = 0                   # rows added/deleted since that save
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

    @property
    def adapter(self) -> _Kind:
        return ADAPTERS[self.kind]


@dataclasses.dataclass
class BrokenIndex:
    """An index that failed to take a write and whose rebuild failed too: out of service."""
    column: str
    kind: str
    options: dict
    error: BaseException
    retry_at: float

    def unusable(self) -> UnidbError:
        return UnidbError(f"the {self.kind} index on column {self.column!r} is out of "
                          f"service: it failed to take a write and was not rebuilt "
                          f"({type(self.error).__name__}: {self.error}); it is rebuilt at a "
                          f"later write or when the table is reopened, and searches that need "
                          f"it fail until then")


class IndexSet:
    """All indexes of one table, kept in step with its writes by the table engine.

    `write_lock` is the table engine's write lock (the one its store was given): index
    definitions change and snapshots are saved under it, so no write is half-fed meanwhile."""

    def __init__(self, store: TableStore, schema: Schema, write_lock: threading.RLock,
                 options: IndexOptions = DEFAULT.indexes):
        self._store = store
        self.options = options
        self._schema = schema
        self._write_lock = write_lock
        self._handles: dict[str, IndexHandle] = {}
        self._broken: dict[str, BrokenIndex] = {}
        self._lock = threading.RLock()
        self.read_only = self._store.read_only
        # Read-only processes: the state the indexes reflect, the definitions they were opened
        # with, and the queries pinned to that state (catch-up waits until none is).
        self._applied: TableState | None = None
        self._defs: dict[str, dict] = {}
        self._pins = 0
        self._fed_lsn = -1                   # writer: lsn of the last commit fed to indexes
        self._cv = threading.Condition(threading.Lock())
        self._local = threading.local()
        if self.read_only:
            with self._cv:
                self._follow(self._store.state)
        else:
            self._open_existing()

    # -- the state a read runs on ----------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self):
        """The table state one read call runs on, with every index at exactly that state.

        Writer process: the latest published state (indexes are fed every write before its
        state is published, so they may already hold later rows; the query layer drops index
        results that are not live in the snapshot). Read-only process: the latest state on
        disk; the indexes are caught up to it first, and stay there until the block ends
        (catch-up to a newer state waits for pinned queries to finish). Nested calls in one thread reuse the outer state."""
        if not self.read_only:
            yield self._store.state
            return
        held = getattr(self._local, "state", None)
        if held is not None:
            yield held
            return
        with self._cv:
            while True:
                state = self._store.state
                if state is self._applied and not self._defs_changed():
                    break
                if self._pins == 0:
                    self._follow(state)
                    break
                self._cv.wait()
            state = self._applied
            self._pins += 1
        self._local.state = state
        try:
            yield state
        finally:
            self._local.state = None
            with self._cv:
                self._pins -= 1
                if self._pins == 0:
                    self._cv.notify_all()

    def holds_exactly(self, state: TableState) -> bool:
        """Whether the indexes held exactly `state`'s rows throughout a search on it that has
        ended: always in a reader (pinned); in the writer, when no write began feeding them
        since `state` (`apply` sets `_fed_lsn` before it feeds a write)."""
        return self.read_only or self._fed_lsn <= state.lsn

    def current_state(self) -> TableState:
        """The latest state with the indexes caught up to it (not pinned: for callers that
        do not hold a `snapshot()` block; the query layer ignores index rows beyond it)."""
        with self.snapshot() as state:
            return state

    def _defs_changed(self) -> bool:
        return self._wanted_defs() != self._defs

    def _wanted_defs(self) -> dict[str, dict]:
        return {c: d for c, d in self._wanted().items() if d["kind"] != "flat"}

    def _follow(self, state: TableState) -> None:
        """Read-only process: bring the indexes to exactly `state` (no query is pinned)."""
        applied = self._applied
        if applied is not None and state.next_rowid < applied.next_rowid:
            # Row ids only grow; a state behind the indexes means the files were replaced
            # wholesale (e.g. a restored backup): start over from the rows.
            log.warning("table %s went back from row id %d to %d; rebuilding its indexes",
                        self._store.folder, applied.next_rowid, state.next_rowid)
            self._close_handles(list(self._handles))
            applied = None
        wanted = self._wanted_defs()
        # The writer dropped (or dropped and re-created differently) an index.
        self._close_handles([c for c in self._handles if wanted.get(c) != self._defs.get(c)])
        if applied is not None and self._handles:
            # Only the tombstones new since `applied`, of rows it held (newer rows are added
            # only if live).
            dead = np.zeros(0, np.int64) if state.tombstones is applied.tombstones else \
                _ids_below(state.tombstones - applied.tombstones, applied.next_rowid)
            for h in list(self._handles.values()):
                try:
                    with h.lock:
                        self._feed(h, state, dead, since=applied.next_rowid)
                except Exception as e:   # half caught up: rebuild it from the rows below
                    log.warning("index on %s failed to catch up (%r); building it in memory",
                                h.column, e)
                    self._close_handles([h.column])
        # Indexes the writer created since (and, at open, every index).
        for column, d in wanted.items():
            if column not in self._handles:
                self._handles[column] = self._reader_open(column, d, state)
                self._defs[column] = d
        self._applied = state

    def _reader_open(self, column: str, d: dict, state: TableState) -> IndexHandle:
        """Read-only process: an index at exactly `state`, from the saved snapshot when one
        can be read and does not run ahead of `state`, else built from the rows in memory."""
        adapter = ADAPTERS[d["kind"]]
        folder = index_folder(self._store.folder, column)
        if adapter.READER_LOADS and adapter.has_snapshot(folder):
            for attempt in range(READ_RETRIES):
                try:
                    impl, covered = adapter.load_copy(folder, self.options)
                except FileNotFoundError:      # the writer replaced the snapshot meanwhile
                    time.sleep(0.005 * (attempt + 1))
                    continue
                except Exception as e:          # damaged: the rows are the source of truth
                    log.warning("index on %s unreadable (%r); building it in memory", column, e)
                    break
                if covered > state.next_rowid:
                    # Saved after this state was read: it may hold rows the state lacks.
                    impl.close()
                    break
                handle = IndexHandle(column, d["kind"], d["options"], impl, covered)
                try:
                    self._catch_up(handle, state)
                except Exception as e:
                    log.warning("index on %s failed to catch up (%r); building it in memory",
                                column, e)
                    impl.close()
                    break
                return handle
        return self._build(column, d["kind"], d["options"], state)

    def _close_handles(self, columns: list[str]) -> None:
        for c in columns:
            h = self._handles.pop(c, None)
            self._defs.pop(c, None)
            if h is not None:
                h.impl.close()

    # -- definitions -----------------------------------------------------------------------
    def definitions(self) -> dict:
        """column -> {"kind", "options"} for every index, automatic and broken ones included."""
        out = {c: {"kind": h.kind, "options": dict(h.options)} for c, h in self._handles.items()}
        out.update({c: {"kind": b.kind, "options": dict(b.options)}
                    for c, b in self._broken.items()})
        return out

    def _wanted(self) -> dict[str, dict]:
        want = {}
        for name, ctype in self._schema.columns.items():
            if ctype.kind in AUTOMATIC:
                want[name] = {"kind": AUTOMATIC[ctype.kind], "options": {}}
        want.update(self._store.manifest.indexes)
        return want

    # -- open / build ----------------------------------------------------------------------
    def _open_existing(self) -> None:
        state = self._store.state
        for column, d in self._wanted().items():
            if d["kind"] == "flat":
                continue
            folder = index_folder(self._store.folder, column)
            adapter = ADAPTERS[d["kind"]]
            handle = None
            if adapter.has_snapshot(folder):
                try:
                    impl, covered = adapter.load(folder, self.options)
                    handle = IndexHandle(column, d["kind"], d["options"], impl, covered)
                    self._catch_up(handle, state)
                except Exception as e:  # a damaged snapshot is rebuilt from the rows
                    log.warning("index on %s unreadable (%r); rebuilding", column, e)
                    handle = None
            if handle is None:
                handle = self._build(column, d["kind"], d["options"], state)
            self._handles[column] = handle

    def _build(self, column: str, kind: str, options: dict, state: TableState) -> IndexHandle:
        adapter = ADAPTERS[kind]
        ids, vals = self._column_values(state, column, adapter)
        folder = index_folder(self._store.folder, column)
        build_options = options
        if self.read_only:          # a reader's index lives in memory, never in the folder
            folder = None
            if kind == "partition":
                build_options = {**options, "storage": "memory"}
        impl = adapter.build(self._schema[column], build_options, ids, vals, folder,
                             self.options)
        return IndexHandle(column, kind, options, impl, covered=-1,
                           changes=max(len(ids), 1))

    def _column_values(self, state: TableState, column: str, adapter: _Kind,
                       min_rowid: int = 0):
        id_parts, val_parts = [], []
        for part in state.parts:
            if not part.num_rows or part.max_rowid < min_rowid:
                continue
            mask = state.live_mask(part)
            if min_rowid:
                mask = mask & (part.row_ids >= min_rowid)
            if not mask.any():
                continue
            col = _chunk(part.table.column(column))
            ids = part.row_ids
            if not mask.all():
                col = col.filter(pa.array(mask))
                ids = ids[mask]
            i, v = adapter.values(col, ids)
            id_parts.append(i)
            val_parts.append(v)
        ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int64)
        if not val_parts:
            return ids, (np.zeros((0, self._schema[column].dim), np.float32)
                         if adapter.name == "partition" else [])
        if isinstance(val_parts[0], np.ndarray):
            return ids, np.concatenate(val_parts)
        if isinstance(val_parts[0], pa.Array):
            return ids, pa.concat_arrays(val_parts)
        return ids, [x for vp in val_parts for x in vp]

    def _catch_up(self, h: IndexHandle, state: TableState) -> None:
        """Bring a snapshot covering row ids < h.covered up to `state` (deletes idempotent)."""
        self._feed(h, state, _ids_below(state.tombstones, h.covered), since=h.covered)

    def _feed(self, h: IndexHandle, state: TableState, dead: np.ndarray, since: int) -> None:
        """Delete the row ids `dead` from h, then add the live rows of `state` from `since` on."""
        if len(dead):
            h.impl.delete(dead)
        if state.next_rowid > since:
            ids, vals = self._column_values(state, h.column, h.adapter, min_rowid=since)
            if len(ids):
                h.impl.add(ids, vals)
                h.changes += len(ids)

    def create(self, column: str, kind: str | None = None, **options: Any) -> None:
        schema = self._schema
        if column not in schema:
            raise NotFoundError(f"unknown column {column!r}; the table has {schema.names()}")
        ctype = schema[column]
        allowed = KINDS.get(ctype.kind, ())
        kind = kind or (allowed[0] if allowed else None)
        if kind not in allowed:
            raise SchemaError(f"index kind {kind!r} is not available for column {column!r} "
                              f"({ctype!r}); available: {list(allowed)}")
        if self._store.read_only:
            raise ReadOnlyError("cannot create an index through a read-only handle")
        if kind == "flat":
            return                                    # exact scans need no structure
        with self._lock:
            have = self._handles.get(column) or self._broken.get(column)
            if have is not None:
                raise SchemaError(f"column {column!r} already has a {have.kind} index"
                                  f"{' (broken)' if column in self._broken else ''}; "
                                  f"drop_index() it first")
        if kind == "partition" and self.options.partition:
            # connect(options=...) defaults, then the call's own; the index keeps the result
            # in its definition, so reopening under other defaults does not change it.
            options = {**self.options.partition, **options}
        options = _plain_options(column, options)
        # Build from a snapshot without blocking writers, then catch up under the write lock.
        snap = self._store.state
        handle = self._build(column, kind, dict(options), snap)
        with self._write_lock:
            now = self._store.state
            handle.covered = snap.next_rowid
            self._catch_up(handle, now)
            handle.covered = -1
            defs = dict(self._store.manifest.indexes)
            defs[column] = {"kind": kind, "options": dict(options)}
            self._save(handle, now)
            self._store.set_index_definitions(defs)
            with self._lock:
                self._fed_lsn = max(self._fed_lsn, now.lsn)   # it holds rows up to `now`
                self._handles[column] = handle

    def drop(self, column: str) -> None:
        with self._write_lock:
            h = self._handles.get(column) or self._broken.get(column)
            if h is None or column not in self._store.manifest.indexes:
                raise NotFoundError(f"no droppable index on column {column!r}"
                                    + (" (text/sparse indexes are automatic)" if h else ""))
            defs = dict(self._store.manifest.indexes)
            defs.pop(column)
            self._store.set_index_definitions(defs)
            with self._lock:
                self._handles.pop(column, None)
                self._broken.pop(column, None)
            if isinstance(h, IndexHandle):
                h.impl.close()
            shutil.rmtree(index_folder(self._store.folder, column), ignore_errors=True)

    # -- maintenance: the feed step of the engine's write path ---------------------------
    def apply(self, state: TableState, commit: Commit) -> None:
        """Feed one logged and applied write (`commit`, whose rows `state` holds) to every
        index; the engine calls this under its write lock, before it publishes `state`.

        Does not raise for an index's failure: the write is already durable. The failing
        index is rebuilt from `state`'s rows, or, if that fails too, marked broken (see the
        module docstring); a broken index is retried here at most every
        `IndexOptions.rebuild_retry_seconds`."""
        self._fed_lsn = state.lsn            # first: a search that sees it knows to re-check
        for h in list(self._handles.values()):
            try:
                with h.lock:
                    self._feed_commit(h, commit)
            except Exception as e:  # noqa: BLE001 - any failure: the rows hold the truth
                self._rebuild(h, state, e)
            except BaseException as e:
                # An interrupt mid-feed: no time to rebuild, but the index must not answer
                # with rows missing once the state is published.
                self._mark_broken(h, e)
                raise
        self._retry_broken(state)

    def _feed_commit(self, h: IndexHandle, commit: Commit) -> None:
        if len(commit.deletes):
            h.impl.delete(commit.deletes)
            h.changes += len(commit.deletes)
        if commit.batch is not None:
            ids = commit.batch.column(ROWID).to_numpy()
            i, v = h.adapter.values(commit.batch.column(h.column), ids)
            if len(i):
                h.impl.add(i, v)
            h.changes += len(ids)

    def _rebuild(self, h: IndexHandle, state: TableState, error: Exception) -> None:
        """An index failed to take a write: replace it with one built from `state`'s rows."""
        log.error("the %s index on %s of %s failed to take write %d (%s: %s); rebuilding it "
                  "from the rows", h.kind, h.column, self._store.folder, state.lsn,
                  type(error).__name__, error)
        try:
            h.impl.close()
        except Exception:  # noqa: BLE001 - it is being replaced either way
            log.exception("closing the failed index on %s failed", h.column)
        try:
            new = self._build(h.column, h.kind, h.options, state)
        except Exception as e:  # noqa: BLE001 - reported as a broken index
            self._mark_broken(h, e)
            return
        with self._lock:
            self._handles[h.column] = new

    def _mark_broken(self, h: IndexHandle, error: BaseException) -> None:
        log.error("the %s index on %s of %s is out of service until it can be rebuilt "
                  "(%s: %s)", h.kind, h.column, self._store.folder, type(error).__name__, error)
        with self._lock:
            self._handles.pop(h.column, None)
            self._broken[h.column] = BrokenIndex(h.column, h.kind, h.options, error,
                                                 time.monotonic() +
                                                 self.options.rebuild_retry_seconds)

    def _retry_broken(self, state: TableState) -> None:
        for b in list(self._broken.values()):
            if time.monotonic() < b.retry_at:
                continue
            try:
                handle = self._build(b.column, b.kind, b.options, state)
            except Exception as e:  # noqa: BLE001 - still broken: try again later
                log.error("rebuilding the %s index on %s failed again (%s: %s)", b.kind,
                          b.column, type(e).__name__, e)
                b.error = e
                b.retry_at = time.monotonic() + self.options.rebuild_retry_seconds
                continue
            log.warning("the %s index on %s is rebuilt and back in service", b.kind, b.column)
            with self._lock:
                self._broken.pop(b.column, None)
                self._handles[b.column] = handle

    def health(self) -> dict[str, str]:
        """column -> the failure of each broken index (empty when all are in service)."""
        return {c: f"{type(b.error).__name__}: {b.error}" for c, b in self._broken.items()}

    def checkpointed(self, state: TableState) -> None:
        """The table checkpointed at `state`: save the snapshots of indexes that changed
        enough since their last save (or were never saved). A failed save is logged, never
        raised: index snapshots are derived data that catch up from the rows on open, so the
        index stays unsaved and is saved at a later checkpoint."""
        for h in list(self._handles.values()):
            size = max(len(h.impl), 1)
            if h.changes >= max(self.options.save_min_changes,
                                self.options.save_min_fraction * size) or h.covered < 0:
                try:
                    self._save(h, state)
                except Exception:  # noqa: BLE001 - derived data: see the docstring
                    log.exception("saving the index on %s of %s failed; it is saved at a "
                                  "later checkpoint", h.column, self._store.folder)

    def _save(self, h: IndexHandle, state: TableState) -> None:
        # Under the table's write lock no write is half-fed into the index, so the snapshot
        # holds exactly the rows below the published state's `next_rowid` (minus deletes) —
        # the watermark.
        folder = files.ensure_dir(index_folder(self._store.folder, h.column))
        with self._write_lock, h.lock:
            state = self._store.state
            h.impl.save(folder, state.next_rowid)
            h.covered = state.next_rowid
            h.changes = 0

    def close(self, checkpoint: bool) -> None:
        with self._lock:
            for h in self._handles.values():
                try:
                    if checkpoint and not self._store.read_only and (h.changes or h.covered < 0):
                        self._save(h, self._store.state)
                finally:
                    h.impl.close()
            self._handles.clear()
            self._broken.clear()

    # -- lookups for the query layer -------------------------------------------------------
    def get(self, column: str, kind: str | None = None):
        """The live index of `column` (of `kind`, when given), or None. A broken index is None
        for the kinds an exact scan can stand in for, and raises `UnidbError` for the others
        (text, sparse), so a search never answers from an index missing rows."""
        h = self._handles.get(column)
        if h is None:
            b = self._broken.get(column)
            if b is not None and (kind is None or b.kind == kind) \
                    and b.kind not in EXACT_FALLBACK:
                raise b.unusable()
            return None
        if kind is not None and h.kind != kind:
            return None
        return h

    def vector_index(self, column: str):
        h = self.get(column, "partition")
        return None if h is None else h.impl

    def scalar_index(self, column: str):
        h = self.get(column, "sorted")
        return None if h is None else h.impl

    def stats(self, column: str) -> dict:
        """Size and maintenance figures of one index; `broken` names the failure that took it
        out of service (None while it is in service)."""
        h = self._handles.get(column)
        b = self._broken.get(column)
        if b is not None:
            return {"kind": b.kind, "column": column, "broken": str(b.unusable())}
        if h is None:
            raise NotFoundError(f"no index on column {column!r}; indexes: "
                                f"{sorted(self._handles)}")
        with h.lock:
            s = dict(h.impl.stats())
        s.update({"kind": h.kind, "column": column, "covered_rowid": h.covered,
                  "unsaved_changes": h.changes, "broken": None})
        return s

    # MATCH(column, 'query') in filters asks this (the filter evaluator's context).
    def match_mask(self, column: str, query: str, row_ids: np.ndarray) -> np.ndarray:
        h = self.get(column, "text")
        if h is None:
            raise QueryError(f"MATCH({column}, ...) needs a full-text index on {column!r} "
                             f"(declare the column as unidb.Text())")
        with h.lock:
            return h.impl.match_mask(query, row_ids)
