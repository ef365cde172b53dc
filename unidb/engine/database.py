"""`DatabaseEngine`: what every handle on one database folder in this process shares — the
folder with its writer lock and one `TableEngine` per open table — and how handles join and
release it.

A second `connect()` of a folder this process has open for writing joins the same engine
(`open_engine`), so writes through either handle are seen at once through both; the engine
closes with its last handle (`release`), or, when that handle is garbage-collected instead,
without a checkpoint (`release_unreachable`), as a process exit would. A read-only open always
gets an engine of its own, as in another process.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping

from unidb.engine.table import TableEngine
from unidb.errors import NotFoundError, SchemaError, UnidbError
from unidb.options import DEFAULT, Options
from unidb.schema import Schema
from unidb.storage import backup
from unidb.storage.catalog import DatabaseFolder
from unidb.storage.table_store import TableStore

log = logging.getLogger("unidb")


def check_analyzers(schema: Schema) -> None:
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


class DatabaseEngine:
    """One open database folder: the folder with its writer lock, and one `TableEngine` per
    open table. Shared by every handle this process opens on the folder; closed with the last.

    An engine never refers to a handle, and neither do its background threads, so a handle
    the user drops is garbage at once and its finalizer can release the engine."""

    def __init__(self, path: Path, read_only: bool, durability: str, options: Options = DEFAULT):
        self.path = path
        self.read_only = read_only
        self.durability = durability
        self.options = options
        self.key = os.path.realpath(path)
        self.folder = DatabaseFolder(path, read_only=read_only)
        self.tables: dict[str, TableEngine] = {}
        # Guards `tables` and the folder's table set (create, drop, open, close).
        self.lock = threading.RLock()
        self.handles = 0
        self.closed = False

    def join(self, durability: str, options: Options) -> bool:
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
        if options != self.options:
            raise UnidbError(f"database {str(self.path)!r} is already open in this process "
                             f"with other options; a second handle shares them, so close the "
                             f"other handle first, or pass the same options (open with / "
                             f"asked for: {'; '.join(self.options.differences(options))})")
        self.handles += 1
        return True

    # -- tables ----------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        return self.folder.table_names()

    def exists(self, name: str) -> bool:
        return self.folder.exists(name)

    def table(self, name: str) -> TableEngine:
        """The open table `name`, opened (and recovered from its log) on first use."""
        with self.lock:
            table = self.tables.get(name)
            if table is None:
                if not self.folder.exists(name):
                    raise NotFoundError(f"table {name!r} does not exist; tables: "
                                        f"{self.folder.table_names()}")
                table = self.tables[name] = TableEngine(
                    name, self.folder.table_dir(name), self.read_only, self.durability,
                    self.options)
            return table

    def create_table(self, name: str, schema: Mapping | Schema, exist_ok: bool = False,
                     data: Any = None) -> TableEngine:
        """The table `name` with `schema` ({name: unidb type}), made new and empty and given
        the rows `data` — or, with `exist_ok`, the one that exists with that schema (then
        `data` is not added)."""
        DatabaseFolder.check_name(name)
        schema = schema if isinstance(schema, Schema) else Schema(schema)
        check_analyzers(schema)
        if data is not None:                  # bad rows must not leave an empty table behind
            data = schema.to_batch(data)
        with self.lock:
            if self.folder.exists(name):
                if not exist_ok:
                    raise SchemaError(f"table {name!r} already exists (use exist_ok=True to "
                                      f"open it, or drop_table first)")
                table = self.table(name)
                if table.schema != schema:
                    raise SchemaError(f"table {name!r} exists with a different schema: "
                                      f"{table.schema!r}")
                return table
            # Made complete under a staging name, then renamed into place: a crash never
            # leaves a half-made table.
            staging = self.folder.staging_dir(name)
            TableStore.create(staging, schema.to_json(), self.durability,
                              self.options.storage).abandon()
            self.folder.publish(staging, name)
            table = self.table(name)
        if data is not None:
            table.add(data)
        return table

    def drop_table(self, name: str, missing_ok: bool) -> None:
        """Delete a table's files; its TableEngine (shared by every handle) is closed first."""
        with self.lock:
            table = self.tables.pop(name, None)
            if table is not None:
                table.close(checkpoint=False)
            if not self.folder.exists(name):
                if missing_ok:
                    return
                raise NotFoundError(f"table {name!r} does not exist")
            self.folder.drop(name)

    def backup(self, dest: str | os.PathLike) -> dict:
        """Copy every table into the new folder `dest`, each as of one write (`storage/backup.py`);
        returns what was copied."""
        names = self.folder.table_names()
        return backup.backup({name: self.table(name).copy_files for name in names}, dest)

    # -- life cycle ------------------------------------------------------------------------
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
                for table in self.tables.values():
                    try:
                        table.close(checkpoint=checkpoint)
                    except Exception as e:   # close the others; their rows are in the WAL
                        failure = failure or e
            finally:
                self.tables.clear()
                self.folder.close()
            if failure is not None:
                raise failure


# Engines of the databases this process has open for writing, by real path: a second
# `connect()` of one of them joins it instead of failing on its own writer lock.
_WRITERS: dict[str, DatabaseEngine] = {}
# Guards _WRITERS and every engine's handle count and close. A finalizer may take it inside
# any allocation, even under a live engine's lock, so while it is held only an engine without
# handles is locked (to close it). Reentrant: a collection inside connect() may release a
# handle in the same thread.
_WRITERS_LOCK = threading.RLock()
# Background threads (table compaction, index rebalancing) are named so; a handle finalized
# in one of them is released from a new thread, since closing joins those very threads.
BACKGROUND_THREAD_PREFIX = "unidb-"


def open_engine(path: Path, read_only: bool, durability: str,
                options: Options = DEFAULT) -> DatabaseEngine:
    """The engine a new handle uses: this process's writer on `path`, or a new one."""
    if read_only:
        # A read-only handle is always its own reader (as in another process): it follows the
        # writer's commits from disk and never holds the writer lock.
        engine = DatabaseEngine(path, True, durability, options)
        engine.handles = 1
        return engine
    with _WRITERS_LOCK:
        engine = _WRITERS.get(os.path.realpath(path))
        if engine is not None and engine.join(durability, options):
            return engine
        engine = DatabaseEngine(path, False, durability, options)
        engine.handles = 1
        _WRITERS[engine.key] = engine
        return engine


def release(engine: DatabaseEngine, checkpoint: bool) -> None:
    """One handle fewer; the last one closes the engine and releases the writer lock."""
    with _WRITERS_LOCK:
        engine.handles -= 1
        if engine.handles > 0:
            return
        if _WRITERS.get(engine.key) is engine:
            del _WRITERS[engine.key]
        engine.close(checkpoint)


def release_unreachable(engine: DatabaseEngine) -> None:
    """A handle was garbage-collected without close(): release it, logging any failure.

    No checkpoint: a collection runs at any allocation, in any thread, and must stay cheap;
    as at a process exit, the WAL holds every acknowledged write for the next open."""
    if threading.current_thread().name.startswith(BACKGROUND_THREAD_PREFIX):
        threading.Thread(target=release_unreachable, args=(engine,), daemon=True,
                         name=f"release {engine.path}").start()
        return
    try:
        release(engine, checkpoint=False)
    except Exception:  # noqa: BLE001 - nobody to raise to: the handle is gone
        log.exception("closing database %s after its last handle was dropped failed; its "
                      "rows are safe in the WAL", engine.path)
