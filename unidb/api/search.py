"""`SearchBuilder`: the fluent query a user writes — `t.search(q).where(...).limit(10).to_list()`.

The builder only collects the request and validates it; execution is delegated to the query
layer (exact flat scans, index scans, the hybrid planner) and the result rows are assembled
here: selected columns, the primary key, and `_distance` (or `_score` for inner product).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from unidb.query.knobs import (check_fuse, check_params, check_vector_weights,
                              is_finite_number)
from unidb.errors import QueryError, ValidationError

DEFAULT_LIMIT = 10
# A request for more rows than this is almost always a mistake (use to_arrow() for scans).
MAX_LIMIT = 100_000


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_search_arguments(args: tuple, unknown: dict) -> None:
    """Table.search() takes the query vector positionally and everything else by name."""
    if args:
        raise QueryError(f"search() takes one positional argument (the query vector); pass "
                         f"the rest by name, e.g. column=, text=; got {len(args)} more")
    if unknown:
        raise QueryError(f"unknown argument(s) {sorted(unknown)} to search(); known: vector, "
                         f"column, text, sparse, vectors, weights, text_column, sparse_column")


# The fusion a hybrid search uses unless .fuse() says otherwise (checked once, at import).
_DEFAULT_FUSE: tuple[str, dict] = check_fuse("rrf", {}, [])


class SearchBuilder:
    def __init__(self, table, vector: Any = None, column: str | None = None,
                 text: str | None = None, sparse: Any = None, vectors: dict | None = None,
                 weights: dict | None = None, text_column: str | None = None,
                 sparse_column: str | None = None):
        for arg, v in (("column", column), ("text_column", text_column),
                       ("sparse_column", sparse_column)):
            if v is not None and not isinstance(v, str):
                raise QueryError(f"{arg}= must be a column name (str), got {v!r}")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise QueryError(f"text= must be a non-empty string, got {text!r}")
        if vectors is not None and (not isinstance(vectors, dict) or not vectors):
            raise QueryError(f"vectors= must be a dict {{column: query vector}}, got "
                             f"{type(vectors).__name__}")
        weights = check_vector_weights(weights, vectors)
        self._table = table
        self._text_column = text_column
        self._sparse_column = sparse_column
        self._column = column
        self._vector = vector
        self._text = text
        self._sparse = sparse
        self._vectors = vectors
        self._weights = weights
        self._where = None
        self._limit = DEFAULT_LIMIT
        self._limit_set = False
        self._select: list[str] | None = None
        self._range: tuple[float | None, float | None] | None = None
        self._params: dict = {}
        self._fuse: tuple[str, dict] = _DEFAULT_FUSE
        self._explain = None
        if vector is None and text is None and sparse is None and vectors is None:
            raise QueryError("search() needs vector=, text=, sparse= or vectors=")
        if vectors is not None and vector is not None:
            raise QueryError("pass either vector= (one column) or vectors= (several), not both")

    # -- building --------------------------------------------------------------------------
    def where(self, filter: Any) -> "SearchBuilder":
        """Restrict to rows matching a filter string or `unidb.col(...)` expression."""
        self._where = self._table._filter(filter)
        return self

    def limit(self, k: int) -> "SearchBuilder":
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"limit must be a positive integer, got {k!r}")
        if k > MAX_LIMIT:
            raise QueryError(f"limit {k} exceeds the maximum {MAX_LIMIT}; use to_arrow(where=) "
                             f"or distance_range() for large result sets")
        self._limit = int(k)
        self._limit_set = True
        return self

    def select(self, columns: Sequence[str]) -> "SearchBuilder":
        self._select = self._table._columns(columns)
        return self

    def distance_range(self, min: float | None = None, max: float | None = None
                       ) -> "SearchBuilder":
        """Return every row whose distance lies in [min, max] (no limit unless one is set)."""
        for name, v in (("min", min), ("max", max)):
            if v is not None and not is_finite_number(v):
                raise QueryError(f"distance_range {name} must be a finite number, got {v!r}")
        if min is None and max is None:
            raise QueryError("distance_range() needs min= and/or max=")
        if min is not None and max is not None and min > max:
            raise QueryError(f"distance_range min {min} is greater than max {max}")
        self._range = (None if min is None else float(min), None if max is None else float(max))
        return self

    def params(self, **knobs: Any) -> "SearchBuilder":
        """Per-query knobs for the access path (e.g. nprobe=, eps2=, exact=True); a knob set
        to None goes back to its default. Names and values are checked here (unidb.api.knobs)."""
        for name, value in check_params(knobs).items():
            if value is None:
                self._params.pop(name, None)
            else:
                self._params[name] = value
        return self

    def fuse(self, method: str = "rrf", **options: Any) -> "SearchBuilder":
        """How hybrid (vector + text/sparse) results combine: "rrf" (k=60) or "linear"
        (weights= per source, normalize="minmax" or "zscore")."""
        sources = [kind for kind, v in (("vector", self._vector), ("text", self._text),
                                        ("sparse", self._sparse)) if v is not None]
        self._fuse = check_fuse(method, options, sources)
        return self

    # -- running ---------------------------------------------------------------------------
    def _query_matrix(self, column: str, ctype, value: Any) -> tuple[np.ndarray, bool]:
        """Validated (nq, dim) float32 queries and whether the input was a single vector."""
        try:
            raw = value if isinstance(value, np.ndarray) else np.asarray(value)
            if raw.dtype.kind not in "fiu":      # bools and strings are not coordinates
                raise ValueError(raw.dtype)
            q = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValidationError(f"query for column {column!r} must be numbers, got "
                                  f"{_short(value)}") from None
        single = q.ndim == 1
        if single:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != ctype.dim:
            raise ValidationError(f"query for column {column!r} must have dimension {ctype.dim}, "
                                  f"got shape {np.shape(value)}")
        if not np.isfinite(q).all():
            raise ValidationError(f"query for column {column!r} contains NaN or infinity")
        q32 = q.astype(np.float32)
        if not np.isfinite(q32).all():
            raise ValidationError(f"query for column {column!r} overflows float32")
        if ctype.metric == "cosine" and (~np.any(q32 != 0, axis=1)).any():
            raise ValidationError(f"query for cosine column {column!r} is a zero vector")
        return np.ascontiguousarray(q32), single

    def _run(self):
        """Execute; returns (per-query (row_ids, values), single?, value column, state)."""
        from unidb.api import execute
        return execute.run(self)

    def to_arrow(self) -> pa.Table:
        """Results as one Arrow table (with a `_query` column when several queries ran)."""
        results, single, value_col, state = self._run()
        tables = [self._assemble(state, ids, vals, value_col) for ids, vals in results]
        if single:
            return tables[0]
        for i, t in enumerate(tables):
            tables[i] = t.append_column("_query", pa.array(np.full(t.num_rows, i, np.int64)))
        return pa.concat_tables(tables)

    def to_pandas(self):
        return self.to_arrow().to_pandas()

    def to_list(self) -> list:
        """Results as a list of dicts (a list of such lists when several queries ran)."""
        results, single, value_col, state = self._run()
        lists = [self._assemble(state, ids, vals, value_col).to_pylist() for ids, vals in results]
        return lists[0] if single else lists

    def explain(self, run: bool = True):
        """The plan and counters of this search (runs it unless run=False)."""
        from unidb.api import execute
        return execute.explain(self, run=run)

    def _assemble(self, state, row_ids: np.ndarray, values: np.ndarray, value_col: str
                  ) -> pa.Table:
        """Result rows from the same snapshot the search ran on (never a newer one)."""
        t = self._table
        cols = self._select if self._select is not None else t.schema.names()
        if t.primary_key not in cols:
            cols = [t.primary_key] + cols
        if len(row_ids):
            table = state.take(row_ids, cols)
        else:
            table = t._empty(cols)
        return table.append_column(value_col, pa.array(values, type=pa.float64()))
