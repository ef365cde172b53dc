"""`SearchRequest` and `SearchResult`: what a search is, and what it found, as plain values.

A search travels as one immutable `SearchRequest` from whoever builds it to whoever runs it:

    SearchBuilder (api/search.py) ──┐                     ┌─> engine/execute.py (embedded, server)
    SQL vector blocks (sql/blocks) ─┼─> SearchRequest ────┤
    HTTP body (server/routes.py) ───┘   to_json/from_json └─> client/remote.py (POST, decode)

It is checked in two steps, each in one place: everything that needs no table when it is made
(`__post_init__`: types, the k rule, ranges, knobs, fusion, query vectors numeric and finite),
and everything that needs the table's schema in `resolve(schema)` (columns exist and have the
right kind, query dimensions, cosine zero vectors), which also says which columns the search
reads. The engine runs a request and returns a `SearchResult`: per query the row ids and
their `_distance` / `_score` values, the explain records, and the snapshot the rows are read
from, so the rows assembled are those of the moment the search ran.
"""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from unidb.errors import NotFoundError, QueryError, ValidationError
from unidb.query.codec import EXPR, decode_expr, decode_vector, encode_vector, is_b64_vector
from unidb.query.filter import ROWID, Expr, to_expr
from unidb.query.knobs import (check_fuse, check_params, check_vector_weights,
                               is_finite_number)
from unidb.schema import Schema, SparseVector, Text, Vector, parse_sparse

DEFAULT_LIMIT = 10
# A request for more rows than this is almost always a mistake (use to_arrow() for scans).
MAX_LIMIT = 100_000
# The fusion a hybrid search uses unless .fuse() says otherwise.
DEFAULT_FUSE: tuple[str, Mapping[str, Any]] = ("rrf", types.MappingProxyType({"k": 60.0}))
# The value columns the engine adds to the selected ones (unidb/query/result.py adds `_query`).
DISTANCE, SCORE = "_distance", "_score"
# The keys of a request's JSON form (SearchRequest.to_json), in the order they are written.
JSON_FIELDS = ("vector", "column", "text", "text_column", "sparse", "sparse_column", "vectors",
               "weights", "where", "limit", "distance_range", "select", "fuse", "params")


def check_k(k: Any) -> int:
    """The one rule for how many rows a search returns: an integer (not a bool) in
    1..MAX_LIMIT. QueryError otherwise."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QueryError(f"limit must be a positive integer, got {k!r}")
    if k > MAX_LIMIT:
        raise QueryError(f"limit {k} exceeds the maximum {MAX_LIMIT}; use to_arrow(where=) "
                         f"or distance_range() for large result sets")
    return int(k)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _name(arg: str, v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise QueryError(f"{arg}= must be a column name (str), got {v!r}")
    return v


def _query_array(value: Any, what: str) -> np.ndarray:
    """A query vector (1-D) or batch (2-D) as read-only float32: numbers, finite in float32."""
    if isinstance(value, np.ndarray) and value.dtype == np.float32 \
            and not value.flags.writeable and value.flags.c_contiguous:
        q32 = value            # a request's own array (or one decoded from JSON): re-checked
    else:
        try:
            raw = value if isinstance(value, np.ndarray) else np.asarray(value)
            if raw.dtype.kind not in "fiu":      # bools and strings are not coordinates
                raise ValueError(raw.dtype)
            q = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValidationError(f"{what} must be numbers, got {_short(value)}") from None
        if q.ndim in (1, 2) and not np.isfinite(q).all():
            raise ValidationError(f"{what} contains NaN or infinity")
        with np.errstate(over="ignore"):                      # refused just below
            q32 = np.array(q, dtype=np.float32, order="C")   # the request's own copy
        q32.flags.writeable = False
    if q32.ndim not in (1, 2) or q32.shape[-1] == 0 or not len(q32):
        raise ValidationError(f"{what} must be one vector or a non-empty batch of vectors "
                              f"(a 2-D array), got shape {np.shape(value)}")
    if not np.isfinite(q32).all():
        raise ValidationError(f"{what} contains NaN or infinity" if q32 is value else
                              f"{what} overflows float32")
    return q32


def _where(value: Any) -> Expr | None:
    if isinstance(value, Mapping) and set(value) == {EXPR}:
        return decode_expr(value[EXPR])       # the JSON form: {"expr": tree}
    return to_expr(value)


def _select(columns: Any) -> tuple[str, ...] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
        raise QueryError(f"columns must be a list of column names, got {columns!r}")
    if len(set(columns)) != len(columns):
        raise QueryError(f"columns {list(columns)} name a column more than once")
    return tuple(columns)


def _range(value: Any) -> tuple[float | None, float | None] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise QueryError(f"distance_range must be (min, max), got {value!r}")
    lo, hi = value
    for name, v in (("min", lo), ("max", hi)):
        if v is not None and not is_finite_number(v):
            raise QueryError(f"distance_range {name} must be a finite number, got {v!r}")
    if lo is None and hi is None:
        raise QueryError("distance_range() needs min= and/or max=")
    if lo is not None and hi is not None and lo > hi:
        raise QueryError(f"distance_range min {lo} is greater than max {hi}")
    return None if lo is None else float(lo), None if hi is None else float(hi)


def select_columns(schema: Schema, columns: Any) -> list[str]:
    """Columns to read: all when None, else the named ones (each once, each in `schema`, or
    `_rowid`). QueryError naming the table's columns otherwise."""
    if columns is None:
        return schema.names()
    cols = list(_select(columns))
    bad = [c for c in cols if c not in schema and c != ROWID]
    if bad:
        raise QueryError(f"unknown column(s) {bad}; the table has {schema.names()}")
    return cols


def vector_column(schema: Schema, column: str | None, table: str = "") -> tuple[str, Vector]:
    """The vector column a search targets (inferred when the schema has only one)."""
    vcols = schema.vector_columns()
    if column is None:
        if len(vcols) == 1:
            column = vcols[0]
        elif not vcols:
            raise QueryError(f"table {table!r} has no vector column")
        else:
            raise QueryError(f"table {table!r} has several vector columns {vcols}; "
                             f"pass column=")
    if column not in schema:
        raise NotFoundError(f"unknown column {column!r}; the table has {schema.names()}")
    ctype = schema[column]
    if not isinstance(ctype, Vector):
        raise QueryError(f"column {column!r} is {ctype!r}, not a Vector column")
    return column, ctype


def _column_of(schema: Schema, wanted: str | None, kind: type, what: str, table: str) -> str:
    cols = [n for n, c in schema.columns.items() if isinstance(c, kind)]
    if wanted is not None:
        if wanted not in cols:
            raise QueryError(f"column {wanted!r} is not a {kind.__name__} column; "
                             f"{what} columns: {cols}")
        return wanted
    if len(cols) == 1:
        return cols[0]
    if not cols:
        raise QueryError(f"table {table!r} has no {kind.__name__} column for {what} search")
    raise QueryError(f"table {table!r} has several {kind.__name__} columns {cols}; pass "
                     f"{what}_column=")


def _check_queries(q: np.ndarray, column: str, ctype: Vector) -> None:
    if q.shape[-1] != ctype.dim:
        raise ValidationError(f"query for column {column!r} must have dimension {ctype.dim}, "
                              f"got shape {q.shape}")
    if ctype.metric == "cosine" and (~np.any(q.reshape(-1, ctype.dim) != 0, axis=1)).any():
        raise ValidationError(f"query for cosine column {column!r} is a zero vector")


@dataclass(frozen=True)
class Target:
    """The columns a request reads in one table, resolved and checked against its schema."""
    vector_column: str | None = None          # the vector (kNN, range, hybrid's dense source)
    vector_type: Vector | None = None
    text_column: str | None = None
    sparse_column: str | None = None
    vector_columns: Mapping[str, Vector] = field(default_factory=dict)    # multi-vector
    columns: tuple[str, ...] = ()             # result columns: the primary key + selected


@dataclass(frozen=True, eq=False)
class SearchRequest:
    """Everything one search is. Immutable; checked when made (see the module docstring).

    vector        one query (1-D) or a batch (2-D), float32; `column` names its column
    text / sparse BM25 text / a sparse vector ((indices, values)) on `text_column` /
                  `sparse_column`; with `vector` too, a hybrid search fused by `fuse`
    vectors       multi-vector: {column: one query}, weighed by `weights`
    where         the filter as a tree (filter text is parsed when the request is made)
    limit         rows per query (None: DEFAULT_LIMIT for top-k, every row in a range)
    distance_range (min, max) distance bounds; either may be None
    select        result columns (None: all); the primary key is always returned
    fuse          (method, options) as unidb.query.knobs.check_fuse returns them
    params        per-query knobs (unidb.query.knobs)
    """
    vector: np.ndarray | None = None
    column: str | None = None
    text: str | None = None
    text_column: str | None = None
    sparse: tuple[np.ndarray, np.ndarray] | None = None
    sparse_column: str | None = None
    vectors: Mapping[str, np.ndarray] | None = None
    weights: Mapping[str, float] | None = None
    where: Expr | None = None
    limit: int | None = None
    distance_range: tuple[float | None, float | None] | None = None
    select: tuple[str, ...] | None = None
    fuse: tuple[str, Mapping[str, Any]] = DEFAULT_FUSE
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for arg in ("column", "text_column", "sparse_column"):
            _name(arg, getattr(self, arg))
        if self.text is not None and (not isinstance(self.text, str) or not self.text.strip()):
            raise QueryError(f"text= must be a non-empty string, got {self.text!r}")
        if self.vectors is not None and (not isinstance(self.vectors, Mapping)
                                         or not self.vectors):
            raise QueryError(f"vectors= must be a dict {{column: query vector}}, got "
                             f"{type(self.vectors).__name__}")
        put("weights", _frozen(check_vector_weights(self.weights, self.vectors)))
        if self.vector is None and self.text is None and self.sparse is None \
                and self.vectors is None:
            raise QueryError("search() needs vector=, text=, sparse= or vectors=")
        if self.vectors is not None and self.vector is not None:
            raise QueryError("pass either vector= (one column) or vectors= (several), not both")
        if self.vectors is not None and (self.text is not None or self.sparse is not None):
            raise QueryError("vectors= (multi-vector) cannot be combined with text/sparse yet")
        if self.vector is not None:
            what = "query" if self.column is None else f"query for column {self.column!r}"
            put("vector", _query_array(self.vector, what))
            if self.vector.ndim == 2 and (self.text is not None or self.sparse is not None):
                raise ValidationError("hybrid search takes one query vector")
        if self.vectors is not None:
            qs = {}
            for c, q in self.vectors.items():
                _name("vectors", c)
                qs[c] = _query_array(q, f"query for column {c!r}")
                if qs[c].ndim != 1:
                    raise ValidationError(f"multi-vector search takes one query vector per "
                                          f"column ({c!r} got {len(qs[c])})")
            put("vectors", types.MappingProxyType(qs))
        if self.sparse is not None:
            qi, qv = parse_sparse(self.sparse, "sparse query")
            qi.flags.writeable = qv.flags.writeable = False
            put("sparse", (qi, qv))
        put("where", _where(self.where))
        if self.limit is not None:
            put("limit", check_k(self.limit))
        put("distance_range", _range(self.distance_range))
        put("select", _select(self.select))
        if not isinstance(self.fuse, (tuple, list)) or len(self.fuse) != 2 \
                or not isinstance(self.fuse[1], Mapping):
            raise QueryError(f"fuse must be (method, options), got {self.fuse!r}")
        method, options = check_fuse(self.fuse[0], self.fuse[1], self.sources)
        put("fuse", (method, _frozen(options)))
        if not isinstance(self.params, Mapping):
            raise QueryError(f"params must be a dict of search parameters, got "
                             f"{self.params!r}")
        knobs = {k: v for k, v in check_params(self.params).items() if v is not None}
        put("params", _frozen(knobs))

    # -- what the request asks ---------------------------------------------------------------
    @property
    def sources(self) -> list[str]:
        """The kinds of source this search ranks by, as fuse() names them."""
        return [kind for kind, v in (("vector", self.vector), ("text", self.text),
                                     ("sparse", self.sparse)) if v is not None]

    @property
    def k(self) -> int:
        """Rows asked per query (DEFAULT_LIMIT unless a limit was set)."""
        return DEFAULT_LIMIT if self.limit is None else self.limit

    @property
    def single(self) -> bool:
        """Whether one query runs (else a batch: one result per query vector)."""
        return self.vector is None or self.vector.ndim == 1

    @property
    def num_queries(self) -> int:
        return 1 if self.single else len(self.vector)

    @property
    def queries(self) -> np.ndarray:
        """The query vectors as an (nq, dim) float32 matrix."""
        return self.vector.reshape(-1, self.vector.shape[-1])

    def replace(self, **changes: Any) -> "SearchRequest":
        """A new request with some fields changed, checked as any new request is."""
        if changes.keys() == {"limit"}:
            # `.limit(k)`, the step nearly every search takes: only the k rule reads the limit
            # (no other field's check does, nor resolve(), whose cached target stays valid),
            # so the rest is not checked again (~25 us of a ~30 us re-check).
            new = object.__new__(SearchRequest)
            new.__dict__.update(self.__dict__)
            k = changes["limit"]
            object.__setattr__(new, "limit", None if k is None else check_k(k))
            return new
        return dataclasses.replace(self, **changes)

    # -- checked against a table ---------------------------------------------------------------
    def resolve(self, schema: Schema, table: str = "") -> Target:
        """The columns this request reads in a table with `schema` (named `table` in errors),
        every name and query checked against it. Computed once per schema."""
        cached = self.__dict__.get("_target")
        if cached is not None and cached[0] is schema and cached[1] == table:
            return cached[2]
        target = self._resolve(schema, table)
        object.__setattr__(self, "_target", (schema, table, target))
        return target

    def _resolve(self, schema: Schema, table: str) -> Target:
        if self.where is not None:
            self.where.validate(schema)
        cols = select_columns(schema, self.select)
        if schema.primary_key not in cols:
            cols = [schema.primary_key] + cols
        out: dict[str, Any] = {"columns": tuple(cols)}
        if self.vectors is not None:
            vcols = {}
            for c, q in self.vectors.items():
                name, ctype = vector_column(schema, c, table)
                _check_queries(q, name, ctype)
                vcols[name] = ctype
            out["vector_columns"] = types.MappingProxyType(vcols)
        if self.vector is not None:
            name, ctype = vector_column(schema, self.column, table)
            _check_queries(self.vector, name, ctype)
            out["vector_column"], out["vector_type"] = name, ctype
        if self.text is not None:
            wanted = self.text_column
            if wanted is None and self.vector is None and self.column is not None:
                wanted = self.column                  # t.search(text=..., column="body")
            out["text_column"] = _column_of(schema, wanted, Text, "text", table)
        if self.sparse is not None:
            wanted = self.sparse_column
            if wanted is None and self.vector is None and self.column is not None \
                    and self.text is None:
                wanted = self.column
            out["sparse_column"] = _column_of(schema, wanted, SparseVector, "sparse", table)
        return Target(**out)

    # -- equality and JSON ---------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchRequest):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name))
                   for f in dataclasses.fields(self))

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (vectors as exact float32 base64, the filter as a tree); fields at
        their defaults are left out. `SearchRequest.from_json` reads it back equal."""
        out: dict[str, Any] = {}
        if self.vector is not None:
            out["vector"] = encode_vector(self.vector)
        for name in ("column", "text", "text_column", "sparse_column", "limit"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.sparse is not None:
            out["sparse"] = {"indices": self.sparse[0].tolist(),
                             "values": self.sparse[1].tolist()}
        if self.vectors is not None:
            out["vectors"] = {c: encode_vector(q) for c, q in self.vectors.items()}
        if self.weights is not None:
            out["weights"] = dict(self.weights)
        if self.where is not None:
            out["where"] = {EXPR: self.where.to_json()}
        if self.distance_range is not None:
            out["distance_range"] = {"min": self.distance_range[0],
                                     "max": self.distance_range[1]}
        if self.select is not None:
            out["select"] = list(self.select)
        if not _same(self.fuse, DEFAULT_FUSE):
            out["fuse"] = {"method": self.fuse[0], **_plain(self.fuse[1])}
        if self.params:
            out["params"] = _plain(self.params)
        return out

    @classmethod
    def from_json(cls, d: Any) -> "SearchRequest":
        """The request a JSON object describes (`to_json`'s form; vectors may also be plain
        lists of numbers, the filter text). QueryError / ValidationError for anything else."""
        if not isinstance(d, Mapping):
            raise QueryError(f"a search request is a JSON object, got {_short(d)}")
        unknown = sorted(map(str, set(d) - set(JSON_FIELDS)))
        if unknown:
            raise QueryError(f"unknown field(s) {unknown} in the search request; known: "
                             f"{list(JSON_FIELDS)}")
        kw: dict[str, Any] = {k: v for k, v in d.items() if v is not None}
        if "vector" in kw:
            kw["vector"] = _vector_json(kw["vector"], "vector")
        if "vectors" in kw:
            if not isinstance(kw["vectors"], Mapping):
                raise QueryError(f"vectors must be an object {{column: vector}}, got "
                                 f"{_short(kw['vectors'])}")
            kw["vectors"] = {c: _vector_json(v, f"vectors.{c}") for c, v in kw["vectors"].items()}
        if "sparse" in kw:
            sp = kw["sparse"]
            if not isinstance(sp, Mapping) or set(sp) != {"indices", "values"}:
                raise ValidationError(f"sparse must be an object {{'indices': [...], 'values': "
                                      f"[...]}}, got {_short(sp)}")
        if "where" in kw and not isinstance(kw["where"], (str, Mapping)):
            raise QueryError(f"where must be filter text or {{'expr': tree}}, got "
                             f"{_short(kw['where'])}")
        if "distance_range" in kw:
            r = kw["distance_range"]
            if not isinstance(r, Mapping) or not set(r) <= {"min", "max"}:
                raise QueryError(f"distance_range must be an object {{'min': ..., 'max': ...}}, "
                                 f"got {_short(r)}")
            kw["distance_range"] = (r.get("min"), r.get("max"))
        if "select" in kw and not isinstance(kw["select"], (str, list)):
            raise QueryError(f"select must be a list of column names, got {_short(kw['select'])}")
        if "fuse" in kw:
            f = kw["fuse"]
            if not isinstance(f, Mapping):
                raise QueryError(f"fuse must be an object {{'method': 'rrf', ...}}, got "
                                 f"{_short(f)}")
            f = dict(f)
            kw["fuse"] = (f.pop("method", "rrf"), f)
        if "params" in kw and not isinstance(kw["params"], Mapping):
            raise QueryError(f"params must be an object of search parameters, got "
                             f"{_short(kw['params'])}")
        for name in ("weights",):
            if name in kw and not isinstance(kw[name], Mapping):
                raise QueryError(f"{name} must be an object {{column: weight}}, got "
                                 f"{_short(kw[name])}")
        return cls(**kw)


def _vector_json(v: Any, where: str) -> Any:
    """A query vector from JSON: a b64 object or (nested) lists of numbers, nothing else."""
    if is_b64_vector(v):
        return decode_vector(v)
    if isinstance(v, list):
        return v
    raise ValidationError(f"{where} must be a list of numbers, a list of such lists, or "
                          f"{{'b64': ..., 'shape': [...]}}; got {_short(v)}")


def _frozen(v: Any) -> Any:
    """A read-only view of a dict (nested dicts too), so a request cannot change after it is
    checked; other values as they are."""
    if isinstance(v, Mapping):
        return types.MappingProxyType({k: _frozen(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(v)
    return v


def _plain(v: Any) -> Any:
    """The JSON form of a frozen value: dicts and lists again."""
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _same(a: Any, b: Any) -> bool:
    """Equality that compares arrays by dtype, shape and values and filters by structure."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) \
            and a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, Expr) or isinstance(b, Expr):
        return isinstance(a, Expr) and a.same_as(b)
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return isinstance(a, Mapping) and isinstance(b, Mapping) and a.keys() == b.keys() \
            and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) \
            and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


__all__ = ["SearchRequest", "Target", "check_k", "select_columns", "vector_column",
           "DEFAULT_LIMIT", "MAX_LIMIT", "DEFAULT_FUSE", "JSON_FIELDS", "DISTANCE", "SCORE"]
