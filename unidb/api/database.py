"""`unidb.connect()` and `Database`: a folder of tables (embedded) — or, later, a server URL."""
from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from unidb.errors import (ClosedError, NotFoundError, ReadOnlyError, SchemaError, UnidbError,
                          ValidationError)
from unidb.schema import Schema
from unidb.storage.catalog import DatabaseFolder
from unidb.storage.table_store import DURABILITY_MODES, TableStore

if TYPE_CHECKING:
    from unidb.api.table import TableCore

log = logging.getLogger("unidb")


def connect(uri: str | Path, *, read_only: bool = False, durability: str = "sync",
            api_key: str | None = None, **client_options: Any):
    """Open (creating if needed) an embedded database folder, or connect to `unidb serve`.

    durability: "sync" (default; an acknowledged write survives kill -9 and power loss) or
    "async" (the log is fsynced every second). read_only: open beside a writer process.

    Opening a folder this process already has open for writing returns a new handle on the
    same database (writes through either are seen at once through both); the writer lock is
    released when the last handle is closed or garbage-collected. A read-only open is always a
    reader of its own, as in another process.
    """
    text = str(uri)
    if text.startswith(("http://", "https://")):
        try:
            from unidb.client import RemoteDatabase
        except ImportError:
            raise UnidbError("the HTTP client is not available in this build") from None
        return RemoteDatabase(text, api_key=api_key, **client_options)
    if durability not in DURABILITY_MODES:
        raise UnidbError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
    if not isinstance(uri, (str, Path)) or not text:
        raise ValidationError(f"connect() takes a folder path or an http(s):// URL, got {uri!r}")
    path = Path(uri)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():      # e.g. a data file passed by mistake
            raise ValidationError(f"cannot open a database at {str(path)!r}: {str(p)!r} is a "
                                  f"file, not a folder; a unidb database is a folder")
    try:
        return Database(path, read_only=read_only, durability=durability)
    except OSError as e:                       # permissions, read-only filesystem, ...
        raise UnidbError(f"cannot open a database at {str(path)!r}: "
                         f"{e.strerror or e}") from e


def _check_analyzers(schema: Schema) -> None:
    """Reject an unknown Text analyzer before any file is written."""
    from unidb.errors import ValidationError
    from unidb.index.sparse import Analyzer
    from unidb.schema import Text
    for name, ctype in schema.columns.items():
        if isinstance(ctype, Text):
            try:
                Analyzer.named(ctype.analyzer)
            except ValidationError as e:
                raise SchemaError(f"column {name!r}: {e}") from None


def _check_table_arg(name: Any) -> None:
    if not isinstance(name, str):
        raise ValidationError(f"a table name is a str, got {name!r}")


class _Engine:
    """What every handle on one database folder in this process shares: the folder with its
    writer lock, and one `TableCore` per open table. Closed with the last handle.

    An engine never refers to a handle, and neither do its background threads, so a handle
    the user drops is garbage at once and its finalizer can release the engine."""

    def __init__(self, path: Path, read_only: bool, durability: str):
        self.path = path
        self.read_only = read_only
        self.durability = durability
        self.key = os.path.realpath(path)
        self.folder = DatabaseFolder(path, read_only=read_only)
        self.cores: dict[str, TableCore] = {}
        self.lock = threading.RLock()
        self.handles = 0
        self.closed = False

    def join(self, durability: str) -> bool:
        """Count one more handle (under _WRITERS_LOCK); False if it can no longer be shared."""
        if self.closed or not self.folder.lock.held:
            # Closed, or its lock was released behind its back (a simulated crash): its files
            # may belong to a newer engine now, so a new open starts afresh.
            return False
        if durability != self.durability:
            raise UnidbError(f"database {str(self.path)!r} is already open in this process "
                             f"with durability={self.durability!r}; a second handle shares it, "
                             f"so it cannot use durability={durability!r} (close the other "
                             f"handle first, or pass the same durability)")
        self.handles += 1
        return True

    def core(self, name: str) -> TableCore:
        """The open table `name`, opened (and recovered from its log) on first use."""
        from unidb.api.table import TableCore
        with self.lock:
            core = self.cores.get(name)
            if core is None:
                if not self.folder.exists(name):
                    raise NotFoundError(f"table {name!r} does not exist; tables: "
                                        f"{self.folder.table_names()}")
                store = TableStore.open(self.folder.table_dir(name), read_only=self.read_only,
                                        durability=self.durability)
                core = self.cores[name] = TableCore(name, store)
            return core

    def create(self, name: str, schema: Schema) -> TableCore:
        """Make a new, empty table (the caller checked it does not exist, under `lock`)."""
        with self.lock:
            staging = self.folder.staging_dir(name)
            TableStore.create(staging, schema.to_json(), self.durability).abandon()
            self.folder.publish(staging, name)
            return self.core(name)

    def drop(self, name: str, missing_ok: bool) -> None:
        """Delete a table's files; its TableCore (shared by every handle) is closed first."""
        with self.lock:
            core = self.cores.pop(name, None)
            if core is not None:
                core.close(checkpoint=False)
            if not self.folder.exists(name):
                if missing_ok:
                    return
                raise NotFoundError(f"table {name!r} does not exist")
            self.folder.drop(name)

    def close(self, checkpoint: bool = True) -> None:
        """Close every open table (checkpointing it first when asked), then release the
        writer lock. Without a checkpoint it is what a process exit does: the WAL holds every
        acknowledged write and the next open replays it."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            # A writer whose lock was released behind its back (tests simulate a crash so)
            # must not write: the folder may belong to a newer engine by now.
            checkpoint = checkpoint and (self.read_only or self.folder.lock.held)
            failure = None
            try:
                for core in self.cores.values():
                    try:
                        core.close(checkpoint=checkpoint)
                    except Exception as e:   # close the others; their rows are in the WAL
                        failure = failure or e
            finally:
                self.cores.clear()
                self.folder.close()
            if failure is not None:
                raise failure


# Engines of the databases this process has open for writing, by real path: a second
# `connect()` of one of them joins it instead of failing on its own writer lock.
_WRITERS: dict[str, _Engine] = {}
# Guards _WRITERS and every engine's handle count and close. A finalizer may take it inside
# any allocation, even under a live engine's lock, so while it is held only an engine without
# handles is locked (to close it). Reentrant: a collection inside connect() may release a
# handle in the same thread.
_WRITERS_LOCK = threading.RLock()
# Background threads (table compaction, index rebalancing) are named so; a handle finalized
# in one of them is released from a new thread, since closing joins those very threads.
_BACKGROUND_THREAD_PREFIX = "unidb-"


def _join_engine(path: Path, read_only: bool, durability: str) -> _Engine:
    """The engine a new handle uses: this process's writer on `path`, or a new one."""
    if read_only:
        # A read-only handle is always its own reader (as in another process): it follows the
        # writer's commits from disk and never holds the writer lock.
        engine = _Engine(path, True, durability)
        engine.handles = 1
        return engine
    with _WRITERS_LOCK:
        engine = _WRITERS.get(os.path.realpath(path))
        if engine is not None and engine.join(durability):
            return engine
        engine = _Engine(path, False, durability)
        engine.handles = 1
        _WRITERS[engine.key] = engine
        return engine


def _release(engine: _Engine, checkpoint: bool) -> None:
    """One handle fewer; the last one closes the engine and releases the writer lock."""
    with _WRITERS_LOCK:
        engine.handles -= 1
        if engine.handles > 0:
            return
        if _WRITERS.get(engine.key) is engine:
            del _WRITERS[engine.key]
        engine.close(checkpoint)


def _release_unreachable(engine: _Engine) -> None:
    """A handle was garbage-collected without close(): release it, logging any failure.

    No checkpoint: a collection runs at any allocation, in any thread, and must stay cheap;
    as at a process exit, the WAL holds every acknowledged write for the next open."""
    if threading.current_thread().name.startswith(_BACKGROUND_THREAD_PREFIX):
        threading.Thread(target=_release_unreachable, args=(engine,), daemon=True,
                         name=f"release {engine.path}").start()
        return
    try:
        _release(engine, checkpoint=False)
    except Exception:  # noqa: BLE001 - nobody to raise to: the handle is gone
        log.exception("closing database %s after its last handle was dropped failed; its "
                      "rows are safe in the WAL", engine.path)


class Database:
    """A handle on an embedded database: one folder, one writer process, any number of reader
    threads. Handles opened on one folder in one process share the database (see `connect`);
    a closed handle, and every table obtained from it, raises `ClosedError`."""

    def __init__(self, path: Path, read_only: bool = False, durability: str = "sync"):
        self.path = Path(path)
        self.read_only = read_only
        self.durability = durability
        self._engine = _join_engine(self.path, read_only, durability)
        self._closed = False
        # This handle's Table objects by name, kept so that repeated open_table() calls (the
        # server's, SQL's) return one object whose caches stay warm. A Table refers to its
        # handle, so the two form a cycle that the garbage collector frees together.
        self._tables: dict[str, Any] = {}
        # Dropped without close() (a notebook cell run again): release on garbage collection.
        # Not at interpreter exit, where the kernel drops the lock and the WAL holds the rows.
        self._finalizer = weakref.finalize(self, _release_unreachable, self._engine)
        self._finalizer.atexit = False

    @property
    def _folder(self) -> DatabaseFolder:
        return self._engine.folder

    def _open_engine(self, write: bool = False) -> _Engine:
        """The shared engine; ClosedError after close(), ReadOnlyError for a write when
        read-only. Every method passes through here."""
        if self._closed:
            raise ClosedError(f"database handle on {str(self.path)!r} is closed; open it again "
                              f"with unidb.connect()")
        if write and self.read_only:
            raise ReadOnlyError(f"database {self.path} was opened read-only")
        return self._engine

    def _table(self, core: TableCore):
        """This handle's Table for a shared TableCore (one per table while it is in use)."""
        from unidb.api.table import Table
        with self._engine.lock:
            t = self._tables.get(core.name)
            if t is None or t._core is not core:
                t = Table(self, core)
                self._tables[core.name] = t
            return t

    # -- tables ----------------------------------------------------------------------------
    def create_table(self, name: str, schema: Mapping | Schema, *, exist_ok: bool = False,
                     data: Any = None):
        """Create a table with `schema` ({name: unidb type}); optionally add `data` rows."""
        engine = self._open_engine(write=True)
        DatabaseFolder.check_name(name)
        schema = schema if isinstance(schema, Schema) else Schema(schema)
        _check_analyzers(schema)
        if data is not None:                  # bad rows must not leave an empty table behind
            data = schema.to_batch(data)
        with engine.lock:
            if engine.folder.exists(name):
                if exist_ok:
                    t = self.open_table(name)
                    if t.schema != schema:
                        raise SchemaError(f"table {name!r} exists with a different schema: "
                                          f"{t.schema!r}")
                    return t
                raise SchemaError(f"table {name!r} already exists (use exist_ok=True to open "
                                  f"it, or drop_table first)")
            table = self._table(engine.create(name, schema))
        if data is not None:
            table.add(data)
        return table

    def open_table(self, name: str):
        """Open an existing table (recovering it from its log if needed)."""
        engine = self._open_engine()
        _check_table_arg(name)
        return self._table(engine.core(name))

    def __getitem__(self, name: str):
        return self.open_table(name)

    def __contains__(self, name: str) -> bool:
        return name in self.table_names()

    def table_names(self) -> list[str]:
        return self._open_engine().folder.table_names()

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete a table and all its files (its Table objects, in every handle, are closed)."""
        engine = self._open_engine(write=True)
        _check_table_arg(name)
        with engine.lock:
            self._tables.pop(name, None)
            engine.drop(name, missing_ok)

    # -- SQL (filled in by unidb.sql when present) -----------------------------------------
    def sql(self, query: str, params: Any = None):
        """Run SQL over this database's tables; returns a pyarrow.Table."""
        self._open_engine()
        try:
            from unidb.sql import run_sql
        except ImportError:
            raise UnidbError("SQL support is not available in this build") from None
        return run_sql(self, query, params)

    # -- life cycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Close this handle (its tables raise ClosedError from now on). The last handle on
        the database checkpoints and closes every table and releases the writer lock."""
        if self._closed:
            return
        self._closed = True
        if self._finalizer.detach() is not None:     # None: released already
            _release(self._engine, checkpoint=True)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else self.durability
        state = ", closed" if self._closed else ""
        return f"unidb.Database({str(self.path)!r}, {mode}{state})"
