"""unidb: one embedded database for scalar columns, full text, sparse and dense vectors."""
from unidb.api.database import Database, connect
from unidb.errors import (AuthError, ClosedError, CorruptionError, LimitError, LockedError,
                          NotFoundError, QueryError, ReadOnlyError, SchemaError, UnidbError,
                          ValidationError)
from unidb.options import IndexOptions, Options, PlannerOptions, StorageOptions
from unidb.query.request import SearchRequest
from unidb.query.result import SearchResult
from unidb.schema import Bool, Float64, Int64, Schema, SparseVector, String, Text, Vector

__version__ = "0.1.0"


def similarity_join(left, right, on, **kwargs):
    """Stream pairs of rows of two tables whose vectors are within max_distance= (or each left
    row's k= nearest right rows). See unidb.api.join.similarity_join."""
    from unidb.api.join import similarity_join as _join
    return _join(left, right, on, **kwargs)


def col(name: str):
    """A column reference for building filters: `unidb.col("price") < 200`."""
    from unidb.query.filter import col as _col
    return _col(name)


def match(column: str, query: str):
    """A full-text predicate for filters: `unidb.match("title", "aspirin")`."""
    from unidb.query.filter import match as _match
    return _match(column, query)


__all__ = ["connect", "Database", "Int64", "Float64", "Bool", "String", "Text", "Vector",
           "SparseVector", "Schema", "col", "match", "similarity_join", "UnidbError", "SchemaError",
           "ValidationError", "NotFoundError", "QueryError", "LockedError", "ReadOnlyError",
           "ClosedError", "CorruptionError", "AuthError", "LimitError", "Options",
           "StorageOptions", "IndexOptions", "PlannerOptions", "SearchRequest", "SearchResult"]
