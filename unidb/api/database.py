"""`unidb.connect()` and `Database`: a folder of tables (embedded) — or, later, a server URL."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping

from unidb.errors import NotFoundError, SchemaError, UnidbError, ValidationError
from unidb.schema import Schema
from unidb.storage.catalog import DatabaseFolder
from unidb.storage.table_store import DURABILITY_MODES, TableStore


def connect(uri: str | Path, *, read_only: bool = False, durability: str = "sync",
            api_key: str | None = None, **client_options: Any):
    """Open (creating if needed) an embedded database folder, or connect to `unidb serve`.

    durability: "sync" (default; an acknowledged write survives kill -9 and power loss) or
    "async" (the log is fsynced every second). read_only: open beside a writer process.
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


class Database:
    """An embedded database: one folder, one writer process, any number of reader threads."""

    def __init__(self, path: Path, read_only: bool = False, durability: str = "sync"):
        self.path = Path(path)
        self.read_only = read_only
        self.durability = durability
        self._folder = DatabaseFolder(self.path, read_only=read_only)
        self._tables: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._closed = False

    # -- tables ----------------------------------------------------------------------------
    def create_table(self, name: str, schema: Mapping | Schema, *, exist_ok: bool = False,
                     data: Any = None):
        """Create a table with `schema` ({name: unidb type}); optionally add `data` rows."""
        from unidb.api.table import Table
        self._check_open(write=True)
        DatabaseFolder.check_name(name)
        schema = schema if isinstance(schema, Schema) else Schema(schema)
        _check_analyzers(schema)
        if data is not None:                  # bad rows must not leave an empty table behind
            data = schema.to_batch(data)
        with self._lock:
            if self._folder.exists(name):
                if exist_ok:
                    t = self.open_table(name)
                    if t.schema != schema:
                        raise SchemaError(f"table {name!r} exists with a different schema: "
                                          f"{t.schema!r}")
                    return t
                raise SchemaError(f"table {name!r} already exists (use exist_ok=True to open "
                                  f"it, or drop_table first)")
            staging = self._folder.staging_dir(name)
            TableStore.create(staging, schema.to_json(), self.durability).abandon()
            self._folder.publish(staging, name)
            table = Table(self, name, TableStore.open(self._folder.table_dir(name),
                                                       durability=self.durability))
            self._tables[name] = table
        if data is not None:
            table.add(data)
        return table

    def open_table(self, name: str):
        """Open an existing table (recovering it from its log if needed)."""
        from unidb.api.table import Table
        self._check_open()
        _check_table_arg(name)
        with self._lock:
            t = self._tables.get(name)
            if t is not None:
                return t
            if not self._folder.exists(name):
                raise NotFoundError(f"table {name!r} does not exist; tables: "
                                    f"{self.table_names()}")
            store = TableStore.open(self._folder.table_dir(name), read_only=self.read_only,
                                    durability=self.durability)
            t = Table(self, name, store)
            self._tables[name] = t
            return t

    def __getitem__(self, name: str):
        return self.open_table(name)

    def __contains__(self, name: str) -> bool:
        return name in self.table_names()

    def table_names(self) -> list[str]:
        self._check_open()
        return self._folder.table_names()

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete a table and all its files."""
        self._check_open(write=True)
        _check_table_arg(name)
        with self._lock:
            t = self._tables.pop(name, None)
            if t is not None:
                t._close(checkpoint=False)
            if not self._folder.exists(name):
                if missing_ok:
                    return
                raise NotFoundError(f"table {name!r} does not exist")
            self._folder.drop(name)

    # -- SQL (filled in by unidb.sql when present) -----------------------------------------
    def sql(self, query: str, params: Any = None):
        """Run SQL over this database's tables; returns a pyarrow.Table."""
        try:
            from unidb.sql import run_sql
        except ImportError:
            raise UnidbError("SQL support is not available in this build") from None
        return run_sql(self, query, params)

    # -- life cycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Checkpoint and close every open table, then release the writer lock."""
        with self._lock:
            if self._closed:
                return
            try:
                for t in self._tables.values():
                    t._close(checkpoint=True)
            finally:
                self._tables.clear()
                self._folder.close()
                self._closed = True

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self, write: bool = False) -> None:
        if self._closed:
            raise UnidbError(f"database {self.path} is closed")
        if write and self.read_only:
            from unidb.errors import ReadOnlyError
            raise ReadOnlyError(f"database {self.path} was opened read-only")

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else self.durability
        return f"unidb.Database({str(self.path)!r}, {mode})"
