"""`Table`: the handle users hold on one table — rows in, rows out, and `search()`.

A `Table` checks that it may still be used (its `Database` handle open, the table not dropped:
else `ClosedError`) and hands each call to the table's `TableEngine` (`unidb/engine/table.py`),
which every handle on the database shares and which owns validation, the write path
(validate, log, apply, feed indexes, publish) and reads over immutable `TableState` snapshots.
"""
from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa

from unidb.engine.indexes import IndexSet
from unidb.engine.table import TableEngine
from unidb.errors import ClosedError, ValidationError
from unidb.query.filter import checked_filter
from unidb.query.request import SearchRequest, select_columns, vector_column
from unidb.query.result import SearchResult, empty_table
from unidb.schema import Vector
from unidb.storage.parts import TableState
from unidb.storage.table_store import TableStore


def _name_arg(column: Any) -> str:
    if not isinstance(column, str):
        raise ValidationError(f"column must be a column name (str), got {column!r}")
    return column


class Table:
    """One table of an embedded database. Thread-safe; obtain it from `Database`.

    A Table belongs to the `Database` handle it came from: once that handle is closed (or the
    table dropped) every method raises `ClosedError`. Handles on one database share one
    `TableEngine`, so a write through one is seen at once through the others."""

    def __init__(self, db, engine: TableEngine):
        self._db = db                                # keeps its handle (and the lock) alive
        self._engine = engine
        self.name = engine.name
        self.schema = engine.schema
        self._pk = self.schema.primary_key

    def _open_engine(self) -> TableEngine:
        """The shared table engine, or ClosedError: the one check every method passes through
        (the `_store` and `_indexes` properties below call it)."""
        if self._db._closed:
            raise ClosedError(f"table {self.name!r}: its database handle on "
                              f"{str(self._db.path)!r} was closed; open it again with "
                              f"unidb.connect() and open_table({self.name!r})")
        engine = self._engine
        if engine.closed:
            raise ClosedError(f"table {self.name!r} was dropped or closed; open_table("
                              f"{self.name!r}) again (after re-creating it if it was dropped)")
        return engine

    @property
    def _store(self) -> TableStore:
        """The table's storage (for tests and diagnostics: writes go through the engine)."""
        return self._open_engine().store

    @property
    def _indexes(self) -> IndexSet:
        """The table's indexes (for tests and diagnostics: searches go through the engine)."""
        return self._open_engine().indexes

    # -- introspection ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self._open_engine().live_rows()

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

    # -- writes ----------------------------------------------------------------------------
    def add(self, rows: Any) -> int:
        """Insert rows; a key that already exists rejects the whole batch. Returns rows added."""
        return self._open_engine().add(rows)

    def upsert(self, rows: Any) -> dict:
        """Insert rows, replacing existing rows with the same key. Returns counts."""
        return self._open_engine().upsert(rows)

    def delete(self, ids: Any = None, where: Any = None) -> int:
        """Delete rows by primary key and/or filter. Returns the number of rows deleted."""
        return self._open_engine().delete(ids, where)

    def update(self, where: Any = None, values: dict | None = None) -> int:
        """Set columns to `values` on every row matching `where` (all rows when None)."""
        return self._open_engine().update(where, values)

    # -- reads -----------------------------------------------------------------------------
    def get(self, ids: Any, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows by primary key, in the order asked; keys not present are skipped."""
        return self._open_engine().get(ids, columns)

    def count(self, where: Any = None) -> int:
        """Number of live rows, optionally matching a filter."""
        return self._open_engine().count(where)

    def to_arrow(self, columns: Sequence[str] | None = None, where: Any = None) -> pa.Table:
        """All live rows (optionally filtered) as one Arrow table."""
        return self._open_engine().scan(columns, where)

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
        self._open_engine()               # a closed table says so now, not when the search runs
        check_search_arguments(args, unknown)
        return SearchBuilder(self, vector=vector, column=column, text=text, sparse=sparse,
                             vectors=vectors, weights=weights, text_column=text_column,
                             sparse_column=sparse_column)

    def execute(self, request: SearchRequest) -> SearchResult:
        """Run a `SearchRequest` (what a search builder makes, or `SearchRequest.from_json`
        of one sent over the wire) and return its `SearchResult`: row ids and distances or
        scores per query, the explain records, and the snapshot the rows are read from
        (`result.to_arrow()` / `to_list()` assemble them)."""
        if not isinstance(request, SearchRequest):
            raise ValidationError(f"execute() takes a SearchRequest, got "
                                  f"{type(request).__name__}")
        return self._open_engine().search(request)

    def data_source(self):
        """This table's latest snapshot through the query operators' DataSource protocol
        (unidb/engine/source.py): what a similarity join or a SQL plan reads."""
        return self._open_engine().data_source()

    # -- indexes and maintenance -----------------------------------------------------------
    def create_index(self, column: str, kind: str | None = None, **options: Any) -> None:
        """Build an index on a column: kind="partition" (vectors), "sorted" (scalars), ..."""
        self._open_engine().create_index(_name_arg(column), kind, **options)

    def drop_index(self, column: str) -> None:
        self._open_engine().drop_index(_name_arg(column))

    def list_indexes(self) -> dict:
        return self._indexes.definitions()

    def index_stats(self, column: str) -> dict:
        return self._indexes.stats(_name_arg(column))

    def compact(self) -> int:
        """Rewrite segments to drop deleted rows now (also runs in the background)."""
        return self._open_engine().compact()

    def flush(self) -> None:
        """Checkpoint in-memory rows into a segment (durability does not depend on it)."""
        self._open_engine().flush()

    def stats(self) -> dict:
        """Rows, parts, segments, pending deletes, lsn, bytes on disk, and the indexes out of
        service (`broken_indexes`: column -> failure; empty when all are in service)."""
        return self._open_engine().stats()

    def _close(self, checkpoint: bool) -> None:
        # Tests simulate a crash with _close(checkpoint=False); databases close TableEngines.
        self._engine.close(checkpoint)

    # -- helpers the search builder and executor use ---------------------------------------
    def _filter(self, where: Any):
        """A `where=` argument as a filter tree checked against this table's schema."""
        return checked_filter(where, self.schema)

    def _columns(self, columns: Sequence[str] | None) -> list[str]:
        return select_columns(self.schema, columns)

    def _empty(self, cols: list[str]) -> pa.Table:
        return empty_table(self.schema, cols)

    def vector_column(self, column: str | None) -> tuple[str, Vector]:
        """Resolve the vector column a search targets (inferred when there is only one)."""
        return vector_column(self.schema, column, self.name)
