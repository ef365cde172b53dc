"""SQL's vector and text functions: names, metrics, vector values, and their DuckDB spelling.

    l2_distance(a, b)             a <-> b    Euclidean distance                    metric "l2"
    cosine_distance(a, b)         a <=> b    1 - cos(a, b)                         metric "cosine"
    negative_inner_product(a, b)  a <#> b    -(a . b)  (pgvector's <#>)            metric "ip"
    inner_product(a, b)                      a . b     (rank with ORDER BY ... DESC) metric "ip"
    MATCH(text_col, 'query')                 row matches the BM25 query (a filter)
    bm25(text_col, 'query')                  BM25 score (rank with ORDER BY ... DESC)

Vector values are parameters (numpy arrays, lists), array literals `[0.1, 0.2]`, or strings in
pgvector's text form `'[0.1,0.2]'`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlglot import exp

from unidb.errors import QueryError

OPERATOR_FUNCTIONS = {"<->": "l2_distance", "<=>": "cosine_distance",
                      "<#>": "negative_inner_product"}


@dataclass(frozen=True)
class DistanceFn:
    name: str
    metric: str           # the column metric whose native search ranks by this function
    negated: bool         # True for inner_product: native `_score` = this value, ranks DESC
    duckdb: str           # DuckDB's exact function over FLOAT[n] arrays


DISTANCE_FUNCTIONS = {
    "l2_distance": DistanceFn("l2_distance", "l2", False, "array_distance"),
    "cosine_distance": DistanceFn("cosine_distance", "cosine", False, "array_cosine_distance"),
    "negative_inner_product": DistanceFn("negative_inner_product", "ip", False,
                                         "array_negative_inner_product"),
    "inner_product": DistanceFn("inner_product", "ip", True, "array_inner_product"),
}
# DuckDB's own names read the same, so a query written for DuckDB runs unchanged.
ALIASES = {"array_distance": "l2_distance", "array_cosine_distance": "cosine_distance",
           "array_negative_inner_product": "negative_inner_product",
           "array_inner_product": "inner_product", "vector_l2_distance": "l2_distance"}
TEXT_FUNCTIONS = ("match", "bm25")


def function_name(node: exp.Expression) -> str | None:
    """Lower-case name of a function call node (None when not a call)."""
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower() if hasattr(node, "sql_name") else None
    return None


def distance_fn(node: exp.Expression) -> DistanceFn | None:
    """The distance function a node calls, if it is one."""
    if not isinstance(node, exp.Anonymous):
        return None
    name = str(node.this).lower()
    return DISTANCE_FUNCTIONS.get(ALIASES.get(name, name))


def text_fn(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Anonymous) and str(node.this).lower() in TEXT_FUNCTIONS:
        return str(node.this).lower()
    return None


def parse_vector_text(text: str) -> np.ndarray:
    """pgvector's text form '[1,2,3]' (brackets optional) -> float array."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    try:
        values = [float(x) for x in body.split(",")] if body.strip() else []
    except ValueError:
        raise QueryError(f"{text[:80]!r} is not a vector; write it as '[0.1, 0.2, ...]'") \
            from None
    return np.asarray(values, dtype=np.float64)


def as_vector(value: Any, what: str) -> np.ndarray:
    """A 1-d finite float vector from a parameter or literal value."""
    if isinstance(value, str):
        value = parse_vector_text(value)
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise QueryError(f"{what} must be a vector (numpy array or list of numbers), got "
                         f"{type(value).__name__}") from None
    if v.ndim != 1 or not len(v):
        raise QueryError(f"{what} must be a 1-d vector, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise QueryError(f"{what} contains NaN or infinity")
    return v


def vector_literal(v: np.ndarray) -> exp.Expression:
    """A vector as DuckDB SQL: CAST([..] AS FLOAT[n]) (float32, as stored)."""
    vals = np.asarray(v, dtype=np.float32).tolist()
    arr = exp.Array(expressions=[exp.Literal.number(repr(float(x))) for x in vals])
    return exp.Cast(this=arr, to=exp.DataType.build(f"FLOAT[{len(vals)}]", dialect="duckdb"))


def duckdb_distance(fn: DistanceFn, left: exp.Expression, right: exp.Expression
                    ) -> exp.Expression:
    """The exact DuckDB expression of a distance call, as DOUBLE."""
    call = exp.Anonymous(this=fn.duckdb, expressions=[left, right])
    return exp.Cast(this=call, to=exp.DataType.build("DOUBLE"))


__all__ = ["DISTANCE_FUNCTIONS", "DistanceFn", "distance_fn", "text_fn", "as_vector",
           "vector_literal", "duckdb_distance", "parse_vector_text", "OPERATOR_FUNCTIONS"]
