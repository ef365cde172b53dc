"""The indexes of one table: definitions, builds, maintenance on every write, persistence.

Indexes are derived data. Each is fed every commit (inserted rows and deleted row ids) under
the table's write lock, saved at checkpoints, and on open catches up with the rows committed
after its snapshot, so it can never be out of step with the table.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from unidb.errors import NotFoundError, QueryError, SchemaError

# Kinds a column type accepts; "flat" (exact scan) needs no build and is always available.
KINDS = {"vector": ("flat",)}


class IndexSet:
    def __init__(self, table):
        self._table = table
        self._indexes: dict[str, Any] = {}

    def definitions(self) -> dict:
        return dict(self._table._store.manifest.indexes)

    def create(self, column: str, kind: str | None, **options: Any) -> None:
        schema = self._table.schema
        if column not in schema:
            raise NotFoundError(f"unknown column {column!r}; the table has {schema.names()}")
        ctype = schema[column]
        allowed = KINDS.get(ctype.kind, ())
        kind = kind or (allowed[0] if allowed else None)
        if kind not in allowed:
            raise SchemaError(f"index kind {kind!r} is not available for column {column!r} "
                              f"({ctype!r}); available: {list(allowed)}")

    def drop(self, column: str) -> None:
        if column not in self._indexes:
            raise NotFoundError(f"no index on column {column!r}")

    def stats(self, column: str) -> dict:
        if column not in self._indexes:
            raise NotFoundError(f"no index on column {column!r}")
        return self._indexes[column].stats()

    def close(self, checkpoint: bool) -> None:
        self._indexes.clear()

    # MATCH(column, 'query') in filters asks this (the filter evaluator's context).
    def match_mask(self, column: str, query: str, row_ids: np.ndarray) -> np.ndarray:
        raise QueryError(f"MATCH({column}, ...) needs a full-text index on {column!r}")
