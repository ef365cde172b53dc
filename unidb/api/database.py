"""`unidb.connect()` and `Database`: the handle users hold on a folder of tables (embedded) —
or, through `connect("http://...")`, on a server.

A `Database` checks that it may still be used (`ClosedError` after `close()`, `ReadOnlyError`
for a write through a read-only handle) and hands each call to the `DatabaseEngine`
(`unidb/engine/database.py`) that every handle on the folder in this process shares.
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any, Mapping

from unidb.engine.database import DatabaseEngine, open_engine, release, release_unreachable
from unidb.engine.table import TableEngine
from unidb.errors import ClosedError, ReadOnlyError, UnidbError, ValidationError
from unidb.options import Options
from unidb.schema import Schema
from unidb.storage.catalog import DatabaseFolder
from unidb.storage.table_store import DURABILITY_MODES


def connect(uri: str | Path, *, read_only: bool = False, durability: str = "sync",
            options: Options | Mapping[str, Any] | None = None,
            api_key: str | None = None, **client_options: Any):
    """Open (creating if needed) an embedded database folder, or connect to `unidb serve`.

    durability: "sync" (default; an acknowledged write survives kill -9 and power loss) or
    "async" (the log is fsynced every second). read_only: open beside a writer process.
    options: engine tunables, a `unidb.Options` or a dict of its sections, e.g.
    `{"storage": {"memtable_flush_bytes": 8 << 20}}` (docs/options.md); embedded only.

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
        if options is not None:
            raise ValidationError("options= tunes an embedded database opened by this "
                                  "process; it cannot be sent to a server")
        return RemoteDatabase(text, api_key=api_key, **client_options)
    options = Options.of(options)
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
        return Database(path, read_only=read_only, durability=durability, options=options)
    except OSError as e:                       # permissions, read-only filesystem, ...
        raise UnidbError(f"cannot open a database at {str(path)!r}: "
                         f"{e.strerror or e}") from e


def _check_table_arg(name: Any) -> None:
    if not isinstance(name, str):
        raise ValidationError(f"a table name is a str, got {name!r}")


class Database:
    """A handle on an embedded database: one folder, one writer process, any number of reader
    threads. Handles opened on one folder in one process share the database (see `connect`);
    a closed handle, and every table obtained from it, raises `ClosedError`."""

    def __init__(self, path: Path, read_only: bool = False, durability: str = "sync",
                 options: Options | None = None):
        self.path = Path(path)
        self.read_only = read_only
        self.durability = durability
        self._engine = open_engine(self.path, read_only, durability, Options.of(options))
        self._closed = False
        # This handle's Table objects by name, kept so that repeated open_table() calls (the
        # server's, SQL's) return one object whose caches stay warm. A Table refers to its
        # handle, so the two form a cycle that the garbage collector frees together.
        self._tables: dict[str, Any] = {}
        # Dropped without close() (a notebook cell run again): release on garbage collection.
        # Not at interpreter exit, where the kernel drops the lock and the WAL holds the rows.
        self._finalizer = weakref.finalize(self, release_unreachable, self._engine)
        self._finalizer.atexit = False

    @property
    def _folder(self) -> DatabaseFolder:
        return self._engine.folder

    def _open_engine(self, write: bool = False) -> DatabaseEngine:
        """The shared engine; ClosedError after close(), ReadOnlyError for a write when
        read-only. Every method passes through here."""
        if self._closed:
            raise ClosedError(f"database handle on {str(self.path)!r} is closed; open it again "
                              f"with unidb.connect()")
        if write and self.read_only:
            raise ReadOnlyError(f"database {self.path} was opened read-only")
        return self._engine

    def _table(self, engine: TableEngine):
        """This handle's Table for a shared TableEngine (one per table while it is in use)."""
        from unidb.api.table import Table
        with self._engine.lock:
            t = self._tables.get(engine.name)
            if t is None or t._engine is not engine:
                t = Table(self, engine)
                self._tables[engine.name] = t
            return t

    # -- tables ----------------------------------------------------------------------------
    def create_table(self, name: str, schema: Mapping | Schema, *, exist_ok: bool = False,
                     data: Any = None):
        """Create a table with `schema` ({name: unidb type}); optionally add `data` rows."""
        engine = self._open_engine(write=True)
        return self._table(engine.create_table(name, schema, exist_ok, data))

    def open_table(self, name: str):
        """Open an existing table (recovering it from its log if needed)."""
        engine = self._open_engine()
        _check_table_arg(name)
        return self._table(engine.table(name))

    def __getitem__(self, name: str):
        return self.open_table(name)

    def __contains__(self, name: str) -> bool:
        return name in self.table_names()

    def table_names(self) -> list[str]:
        return self._open_engine().table_names()

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete a table and all its files (its Table objects, in every handle, are closed)."""
        engine = self._open_engine(write=True)
        _check_table_arg(name)
        with engine.lock:
            self._tables.pop(name, None)
            engine.drop_table(name, missing_ok)

    def backup(self, dest: str | os.PathLike) -> dict:
        """Copy every table into the new folder `dest` while writes go on (each table as of one
        write; writers to a table wait for its copy). The copy is a database folder: open it
        with `unidb.connect`, or restore it with `unidb restore`. Returns what was copied."""
        return self._open_engine(write=True).backup(dest)

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
            release(self._engine, checkpoint=True)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else self.durability
        state = ", closed" if self._closed else ""
        return f"unidb.Database({str(self.path)!r}, {mode}{state})"
