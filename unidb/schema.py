"""Column types, table schemas, and validation of incoming rows into Arrow record batches.

A schema is an ordered mapping of column name -> column type with exactly one primary key
(Int64 or String). `Schema.to_batch` turns any supported input (list of dicts, dict of
columns, pandas DataFrame, pyarrow Table/RecordBatch) into one Arrow RecordBatch that
conforms to the schema, or raises `ValidationError` naming the column, row and problem.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unidb.errors import SchemaError, ValidationError

METRICS = ("l2", "cosine", "ip")
# Strings are stored inline in Arrow segments and WAL records; a bound keeps one bad row from
# producing a giant record. Text (documents) gets more room than String (labels, keys).
MAX_STRING_BYTES = 1 << 20          # 1 MiB per String value
MAX_TEXT_BYTES = 16 << 20           # 16 MiB per Text value
MAX_VECTOR_DIM = 65_536             # pgvector stores up to 16,000; we allow more, but bounded
MAX_SPARSE_NNZ = 1 << 16            # entries in one sparse vector
RESERVED_PREFIX = "_"               # _rowid, _distance, _score ... are unidb's
# Column names become parts of file names (an index lives in `idx-<column>/`); filesystems cap
# a name at 255 bytes, so the same 128 bytes (UTF-8) as a table name leaves room for prefixes.
MAX_COLUMN_NAME_BYTES = 128


@dataclass(frozen=True)
class ColumnType:
    """Base of all column types."""
    nullable: bool = field(default=False, kw_only=True)
    primary_key: bool = field(default=False, kw_only=True)

    kind: str = field(default="", init=False)

    def arrow_type(self) -> pa.DataType:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_json(self) -> dict:
        d = {"type": self.kind, "nullable": self.nullable, "primary_key": self.primary_key}
        d.update(self._extra_json())
        return d

    def _extra_json(self) -> dict:
        return {}

    def convert(self, name: str, values: Any, n: int) -> pa.Array:
        """Convert one input column of `n` values into a validated Arrow array."""
        arr = _as_arrow(name, values, self.arrow_type(), n, key=self.primary_key)
        self._check_nulls(name, arr)
        self._check_values(name, arr)
        return arr

    def _check_nulls(self, name: str, arr: pa.Array) -> None:
        if arr.null_count and not (self.nullable and not self.primary_key):
            first = _first_null(arr)
            if self.primary_key:
                raise ValidationError(f"primary key {name!r} has a missing value (None, or NaN "
                                      f"in a numpy/pandas column) at row {first}; every row "
                                      f"needs a key")
            raise ValidationError(f"non-nullable column {name!r} has a missing value (None, or "
                                  f"NaN in a numpy/pandas column) at row {first}; declare "
                                  f"nullable=True or supply a value")

    def _check_values(self, name: str, arr: pa.Array) -> None:
        pass

    def __repr__(self) -> str:
        args = [f"{k}={v!r}" for k, v in self._extra_json().items()]
        if self.nullable:
            args.append("nullable=True")
        if self.primary_key:
            args.append("primary_key=True")
        return f"{type(self).__name__}({', '.join(args)})"


@dataclass(frozen=True, repr=False)
class Int64(ColumnType):
    kind: str = field(default="int64", init=False)

    def arrow_type(self) -> pa.DataType:
        return pa.int64()


@dataclass(frozen=True, repr=False)
class Float64(ColumnType):
    kind: str = field(default="float64", init=False)

    def arrow_type(self) -> pa.DataType:
        return pa.float64()


@dataclass(frozen=True, repr=False)
class Bool(ColumnType):
    kind: str = field(default="bool", init=False)

    def arrow_type(self) -> pa.DataType:
        return pa.bool_()


@dataclass(frozen=True, repr=False)
class String(ColumnType):
    kind: str = field(default="string", init=False)
    max_bytes = MAX_STRING_BYTES

    def arrow_type(self) -> pa.DataType:
        return pa.string()

    def _check_values(self, name: str, arr: pa.Array) -> None:
        if len(arr) == 0:
            return
        lengths = pc.binary_length(arr)
        longest = pc.max(lengths).as_py()
        if longest is not None and longest > self.max_bytes:
            row = int(np.argmax(lengths.to_numpy(zero_copy_only=False)))
            raise ValidationError(f"column {name!r} row {row}: value of {longest} bytes exceeds "
                                  f"the limit of {self.max_bytes} bytes for {type(self).__name__}")


@dataclass(frozen=True, repr=False)
class Text(String):
    """A string column that is full-text (BM25) indexable; `analyzer` names its analyzer."""
    analyzer: str = "english"
    kind: str = field(default="text", init=False)
    max_bytes = MAX_TEXT_BYTES

    def _extra_json(self) -> dict:
        return {"analyzer": self.analyzer}


@dataclass(frozen=True, repr=False)
class Vector(ColumnType):
    """A dense float32 vector of exactly `dim` values, compared with `metric`."""
    dim: int = 0
    metric: str = "l2"
    kind: str = field(default="vector", init=False)

    def __post_init__(self):
        if not isinstance(self.dim, (int, np.integer)) or isinstance(self.dim, bool) \
                or not 1 <= int(self.dim) <= MAX_VECTOR_DIM:
            raise SchemaError(f"Vector dim must be an integer in 1..{MAX_VECTOR_DIM}, "
                              f"got {self.dim!r}")
        if self.metric not in METRICS:
            raise SchemaError(f"Vector metric must be one of {METRICS}, got {self.metric!r}")
        if self.primary_key:
            raise SchemaError("a Vector column cannot be the primary key")

    def arrow_type(self) -> pa.DataType:
        return pa.list_(pa.float32(), int(self.dim))

    def _extra_json(self) -> dict:
        return {"dim": int(self.dim), "metric": self.metric}

    def convert(self, name: str, values: Any, n: int) -> pa.Array:
        matrix, valid = self.to_matrix(name, values, n)
        flat = pa.array(matrix.reshape(-1), type=pa.float32())
        mask = None if valid is None else pa.array(~valid)
        arr = pa.FixedSizeListArray.from_arrays(flat, int(self.dim), mask=mask)
        self._check_nulls(name, arr)
        return arr

    def to_matrix(self, name: str, values: Any, n: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        """Validated (n, dim) float32 matrix and a validity mask (None when no nulls)."""
        dim = int(self.dim)
        valid = None
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        if isinstance(values, (pa.FixedSizeListArray, pa.ListArray, pa.LargeListArray)):
            if values.null_count:
                valid = values.is_valid().to_numpy(zero_copy_only=False)
                values = values.to_pylist()
            elif isinstance(values, pa.FixedSizeListArray) and values.type.list_size == dim:
                flat = values.flatten()              # honours slicing, zero-copy
                matrix = _to_float32(name, flat.to_numpy(zero_copy_only=False)).reshape(-1, dim)
                self._check_matrix(name, matrix, None)
                return matrix, None
            else:
                values = values.to_pylist()
        if isinstance(values, np.ndarray) and values.dtype != object:
            matrix = values
            if matrix.ndim == 1 and n == 1 and matrix.shape[0] == dim:
                matrix = matrix.reshape(1, dim)
            if matrix.ndim != 2 or matrix.shape[1] != dim:
                raise ValidationError(f"column {name!r} expects vectors of dimension {dim}, "
                                      f"got an array of shape {matrix.shape}")
            matrix = _to_float32(name, matrix)
        else:
            rows = list(values)
            matrix = np.zeros((len(rows), dim), dtype=np.float32)
            for i, v in enumerate(rows):
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    if valid is None:
                        valid = np.ones(len(rows), dtype=bool)
                    valid[i] = False
                    continue
                if valid is not None and not valid[i]:
                    continue
                try:
                    a = np.asarray(v)
                except Exception as e:  # pragma: no cover - numpy accepts nearly anything
                    raise ValidationError(f"column {name!r} row {i}: not a vector: {e}") from None
                if a.ndim != 1 or a.shape[0] != dim:
                    got = a.shape[0] if a.ndim == 1 else f"shape {a.shape}"
                    raise ValidationError(f"column {name!r} row {i}: expected dimension {dim}, "
                                          f"got {got}")
                if a.dtype.kind not in "fiu":        # a bool is not a coordinate
                    raise ValidationError(f"column {name!r} row {i}: vector values must be "
                                          f"numbers, got dtype {a.dtype}")
                with np.errstate(over="ignore", invalid="ignore"):
                    matrix[i] = a
        if n is not None and matrix.shape[0] != n:
            raise ValidationError(f"column {name!r} has {matrix.shape[0]} values, expected {n}")
        self._check_matrix(name, matrix, valid)
        if not matrix.flags.c_contiguous:
            matrix = np.ascontiguousarray(matrix)
        return matrix, valid

    def _check_matrix(self, name: str, matrix: np.ndarray, valid: np.ndarray | None) -> None:
        finite = np.isfinite(matrix).all(axis=1)
        if valid is not None:
            finite |= ~valid
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise ValidationError(f"column {name!r} row {row}: vector contains NaN or infinity "
                                  f"(only finite values are stored)")
        if self.metric == "cosine":
            zero = ~np.any(matrix != 0, axis=1)
            if valid is not None:
                zero &= valid
            if zero.any():
                row = int(np.flatnonzero(zero)[0])
                raise ValidationError(f"column {name!r} row {row}: zero vector has no cosine "
                                      f"direction; cosine vectors must have non-zero norm")


SPARSE_TYPE = pa.struct([("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))])


@dataclass(frozen=True, repr=False)
class SparseVector(ColumnType):
    """A sparse vector {term_id: weight}, stored as sorted int32 indices and float32 values."""
    kind: str = field(default="sparse", init=False)

    def __post_init__(self):
        if self.primary_key:
            raise SchemaError("a SparseVector column cannot be the primary key")

    def arrow_type(self) -> pa.DataType:
        return SPARSE_TYPE

    def convert(self, name: str, values: Any, n: int) -> pa.Array:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if isinstance(values, pa.StructArray) and values.type == SPARSE_TYPE:
            values = values.to_pylist()
        elif isinstance(values, pa.Array):
            values = values.to_pylist()
        if _is_scipy_sparse(values):
            values = [_scipy_row(values, i) for i in range(values.shape[0])]
        out = []
        for i, v in enumerate(values):
            if v is None:
                out.append(None)
                continue
            idx, val = parse_sparse(v, f"column {name!r} row {i}")
            out.append({"indices": idx.tolist(), "values": val.tolist()})
        arr = pa.array(out, type=SPARSE_TYPE)
        if len(arr) != n:
            raise ValidationError(f"column {name!r} has {len(arr)} values, expected {n}")
        self._check_nulls(name, arr)
        return arr


def _is_scipy_sparse(v: Any) -> bool:
    return hasattr(v, "tocsr") and hasattr(v, "shape")


def _scipy_row(m: Any, i: int) -> dict:
    row = m.tocsr()[i]
    return dict(zip(row.indices.tolist(), row.data.tolist()))


def parse_sparse(v: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Turn {term: weight} / (indices, values) / {'indices','values'} into sorted arrays."""
    if _is_scipy_sparse(v):
        v = _scipy_row(v, 0)
    if isinstance(v, Mapping) and set(v.keys()) == {"indices", "values"}:
        idx, val = v["indices"], v["values"]
    elif isinstance(v, Mapping):
        idx, val = list(v.keys()), list(v.values())
    elif isinstance(v, (tuple, list)) and len(v) == 2:
        idx, val = v
    else:
        raise ValidationError(f"{where}: sparse vector must be a dict {{term_id: weight}}, "
                              f"got {type(v).__name__}")
    try:
        idx = np.asarray(idx)
        if np.asarray(val).dtype.kind == "b":
            raise ValidationError(f"{where}: sparse weights must be numbers, not bools")
        val = np.asarray(val, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"{where}: bad sparse vector: {e}") from None
    if idx.ndim != 1 or val.ndim != 1 or len(idx) != len(val):
        raise ValidationError(f"{where}: sparse indices and values must be 1-D of equal length")
    if len(idx) and idx.dtype.kind not in "iu":
        raise ValidationError(f"{where}: sparse term ids must be integers, got {idx.dtype}")
    if len(idx) > MAX_SPARSE_NNZ:
        raise ValidationError(f"{where}: {len(idx)} entries exceed the limit {MAX_SPARSE_NNZ}")
    if len(idx) and (idx.min() < 0 or idx.max() > np.iinfo(np.int32).max):
        raise ValidationError(f"{where}: sparse term ids must be in 0..2^31-1")
    if not np.isfinite(val).all():
        raise ValidationError(f"{where}: sparse vector contains NaN or infinity")
    order = np.argsort(idx, kind="stable")
    idx, val = idx[order].astype(np.int32), val[order].astype(np.float32)
    if len(idx) > 1 and (np.diff(idx) == 0).any():
        raise ValidationError(f"{where}: sparse vector repeats a term id")
    return idx, val


def check_column_name(name: Any) -> str:
    """Raise SchemaError unless `name` can be a column name (and so part of a file name)."""
    # An identifier has no '/', NUL, '.' or space, so it is safe as a path component.
    if not isinstance(name, str) or not name or not name.isidentifier():
        raise SchemaError(f"column name {name!r} must be a non-empty identifier (letters, "
                          f"digits and '_', not starting with a digit)")
    if name.startswith(RESERVED_PREFIX):
        raise SchemaError(f"column name {name!r}: names starting with '_' are reserved")
    size = len(name.encode("utf-8"))
    if size > MAX_COLUMN_NAME_BYTES:
        raise SchemaError(f"column name {name[:40]!r}... is {size} bytes (UTF-8); the limit is "
                          f"{MAX_COLUMN_NAME_BYTES} bytes because column names become file names")
    return name


TYPES: dict[str, type[ColumnType]] = {
    "int64": Int64, "float64": Float64, "bool": Bool, "string": String, "text": Text,
    "vector": Vector, "sparse": SparseVector,
}


def column_from_json(d: Mapping) -> ColumnType:
    d = dict(d)
    cls = TYPES.get(d.pop("type", None))
    if cls is None:
        raise SchemaError(f"unknown column type in stored schema: {d!r}")
    return cls(**d)


class Schema:
    """An ordered set of named columns with one primary key."""

    def __init__(self, columns: Mapping[str, ColumnType]):
        if not isinstance(columns, Mapping) or not columns:
            raise SchemaError("a schema is a non-empty dict of column name -> unidb type")
        self.columns: dict[str, ColumnType] = {}
        for name, ctype in columns.items():
            check_column_name(name)
            if isinstance(ctype, type) and issubclass(ctype, ColumnType):
                raise SchemaError(f"column {name!r}: use an instance, e.g. {ctype.__name__}()")
            if not isinstance(ctype, ColumnType):
                raise SchemaError(f"column {name!r}: {ctype!r} is not a unidb column type")
            for flag in ("nullable", "primary_key"):
                if not isinstance(getattr(ctype, flag), bool):
                    raise SchemaError(f"column {name!r}: {flag} must be True or False, got "
                                      f"{getattr(ctype, flag)!r}")
            self.columns[name] = ctype
        pks = [n for n, c in self.columns.items() if c.primary_key]
        if len(pks) != 1:
            raise SchemaError(f"a schema needs exactly one primary key column "
                              f"(Int64(primary_key=True) or String(primary_key=True)), got {pks}")
        self.primary_key = pks[0]
        if not isinstance(self.columns[self.primary_key], (Int64, String)) \
                or isinstance(self.columns[self.primary_key], Text):
            raise SchemaError(f"primary key {self.primary_key!r} must be Int64 or String")
        self.arrow = pa.schema([pa.field(n, c.arrow_type(), nullable=c.nullable)
                                for n, c in self.columns.items()])

    # -- introspection -------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> ColumnType:
        return self.columns[name]

    def names(self) -> list[str]:
        return list(self.columns)

    def vector_columns(self) -> list[str]:
        return [n for n, c in self.columns.items() if isinstance(c, Vector)]

    def to_json(self) -> dict:
        # A list, not a dict: column order is part of the schema and JSON writers sort keys.
        return {"columns": [{"name": n, **c.to_json()} for n, c in self.columns.items()]}

    @classmethod
    def from_json(cls, d: Mapping) -> "Schema":
        cols = {}
        for c in d["columns"]:
            c = dict(c)
            name = c.pop("name")
            cols[name] = column_from_json(c)
        return cls(cols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return "Schema({" + ", ".join(f"{n!r}: {c!r}" for n, c in self.columns.items()) + "})"

    # -- validation ----------------------------------------------------------------------
    def to_batch(self, rows: Any, partial: bool = False) -> pa.RecordBatch:
        """Validate `rows` into a RecordBatch with this schema's columns, in order.

        With partial=True only the given columns are converted (used by `update(values=)`).
        """
        columns, n = _columns_of(rows)
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise ValidationError(f"unknown column(s) {unknown}; the table has {self.names()}")
        arrays, names = [], []
        for name, ctype in self.columns.items():
            if name in columns:
                arrays.append(ctype.convert(name, columns[name], n))
            elif partial:
                continue
            elif ctype.nullable and not ctype.primary_key:
                arrays.append(pa.nulls(n, type=ctype.arrow_type()))
            else:
                raise ValidationError(f"missing value for column {name!r} "
                                      f"(required: it is not nullable)")
            names.append(name)
        if not partial:
            _check_unique(self.primary_key, arrays[names.index(self.primary_key)])
        fields = [self.arrow.field(n) for n in names]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _check_unique(name: str, keys: pa.Array) -> None:
    if len(keys) < 2:
        return
    counts = pc.value_counts(keys)
    dup = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(dup):
        raise ValidationError(f"duplicate primary key {dup[0]['values'].as_py()!r} in column "
                              f"{name!r} within one batch")


def _columns_of(rows: Any) -> tuple[dict[str, Any], int]:
    """Normalise any supported input into ({name: column values}, row count)."""
    if isinstance(rows, (pa.RecordBatch, pa.Table)):
        _check_distinct(rows.schema.names)
        return {n: rows.column(i) for i, n in enumerate(rows.schema.names)}, rows.num_rows
    try:
        import pandas as pd
        if isinstance(rows, pd.DataFrame):
            names = [str(name) for name in rows.columns]
            _check_distinct(names)
            return {n: _from_pandas(rows.iloc[:, i]) for i, n in enumerate(names)}, len(rows)
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if isinstance(rows, Mapping):
        if not rows:
            raise ValidationError("no columns given")
        lengths = {}
        for k, v in rows.items():
            if not isinstance(k, str):
                raise ValidationError(f"column names must be strings, got {k!r}")
            try:
                lengths[k] = len(v)
            except TypeError:
                raise ValidationError(f"column {k!r}: expected a sequence of values, got "
                                      f"{type(v).__name__} (pass a list of dicts for rows)")
        if len(set(lengths.values())) > 1:
            raise ValidationError(f"columns have different lengths: {lengths}")
        return dict(rows), next(iter(lengths.values()))
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise ValidationError(f"rows must be a list of dicts, a dict of columns, a pandas "
                              f"DataFrame or a pyarrow Table/RecordBatch, got {type(rows).__name__}")
    rows = list(rows)
    names: dict[str, None] = {}
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise ValidationError(f"row {i} is a {type(r).__name__}, expected a dict")
        for k in r:
            names.setdefault(k, None)
    cols = {k: [r.get(k) for r in rows] for k in names}
    return cols, len(rows)


def _check_distinct(names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValidationError(f"column {n!r} appears more than once in the input; "
                                  f"give each column once")
        seen.add(n)


def _is_pandas(values: Any) -> bool:
    return type(values).__module__.startswith("pandas") and hasattr(values, "dtype")


def _from_pandas(series: Any) -> Any:
    """One pandas column as Arrow (or a list for object columns): NaN, None, NaT and pd.NA
    are pandas' missing-value markers, so they become NULL."""
    if series.dtype != object:
        try:
            return pa.Array.from_pandas(series)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            return series.to_numpy()            # an odd dtype: the type checks name it
    return [None if v is None or (isinstance(v, float) and math.isnan(v))
            or (type(v).__name__ in ("NAType", "NaTType")) else v for v in series]


# The filter-level kind each Arrow storage type accepts, and the Python / numpy / Arrow values
# that may become it. No silent coercions: True is not 1.0, b"x" is not "x", 1 is not "1".
def _kind_of_type(typ: pa.DataType) -> str:
    if pa.types.is_boolean(typ):
        return "bool"
    if pa.types.is_integer(typ) or (pa.types.is_decimal(typ) and typ.scale == 0):
        return "int"                        # DuckDB's HUGEINT arrives as decimal128(38, 0)
    if pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return "float"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "string"
    if pa.types.is_null(typ):
        return "null"
    return "other"


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "a bool (True/False)",
               "string": "a str"}


def _reject(name: str, row: int | None, value: Any, want: str, key: bool) -> ValidationError:
    what = "primary key" if key else "column"
    where = f"{what} {name!r}" + ("" if row is None else f" row {row}")
    hint = " (keys are matched exactly, so a float key is refused even when whole)" \
        if key and isinstance(value, (float, np.floating)) else ""
    return ValidationError(f"{where}: {value!r} ({type(value).__name__}) is not "
                           f"{_KIND_WORDS[want]}{hint}")


def _check_arrow(name: str, arr: pa.Array, want: str, key: bool) -> None:
    have = _kind_of_type(arr.type)
    ok = have in (want, "null") or (want == "float" and have == "int") \
        or (want == "int" and have == "float" and not key)
    if not ok:
        raise ValidationError(f"{'primary key' if key else 'column'} {name!r}: Arrow values of "
                              f"type {arr.type} are not {_KIND_WORDS[want]}")


def _check_numpy(name: str, values: np.ndarray, want: str, key: bool) -> None:
    kind = values.dtype.kind
    ok = {"int": "iu" if key else "iuf", "float": "iuf", "bool": "b", "string": "U"}[want]
    if kind not in ok:
        hint = " (keys are matched exactly: pass integers)" if key and kind == "f" else ""
        raise ValidationError(f"{'primary key' if key else 'column'} {name!r}: numpy values of "
                              f"dtype {values.dtype} are not {_KIND_WORDS[want]}{hint}")
    if kind == "f" and want == "int":
        bad = np.isinf(values) | (values != np.round(values)) & ~np.isnan(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValidationError(f"column {name!r} row {i}: {values[i]!r} is not an integer")


# Python types converted without a per-value look (the common case), per kind.
_PLAIN_TYPES = {"int": (int,), "float": (float, int), "bool": (bool,), "string": (str,)}


def _check_python(name: str, values: list, want: str, key: bool) -> None:
    plain = _PLAIN_TYPES[want]
    for i, v in enumerate(values):
        t = type(v)
        if v is None or t in plain:
            continue
        if want in ("int", "float"):
            if isinstance(v, (bool, np.bool_)):
                raise _reject(name, i, v, want, key)
            if isinstance(v, (int, np.integer)):
                continue
            if isinstance(v, (float, np.floating)) and not (want == "int" and key):
                if want == "float" or (math.isfinite(v) and float(v).is_integer()):
                    continue
                if math.isnan(v):
                    raise ValidationError(f"column {name!r} row {i}: NaN is not an integer "
                                          f"(use None for a missing value)")
                raise ValidationError(f"column {name!r} row {i}: {v!r} is not an integer")
        elif want == "bool" and isinstance(v, np.bool_):
            continue
        elif want == "string" and isinstance(v, str):
            continue
        raise _reject(name, i, v, want, key)


def _as_arrow(name: str, values: Any, typ: pa.DataType, n: int, key: bool = False) -> pa.Array:
    """`values` as an Arrow array of `typ`, refusing values of another kind. NaN is never
    stored: it is NULL where it is the container's only missing-value marker (numpy arrays,
    pandas), and refused where None / null exists for that (lists, Arrow arrays)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if _is_pandas(values):
        values = _from_pandas(values)
    if isinstance(values, pa.DictionaryArray):
        values = values.dictionary_decode()
    want = _kind_of_type(typ)
    try:
        if isinstance(values, pa.Array):
            _check_arrow(name, values, want, key)
            arr = values if values.type == typ else values.cast(typ, safe=True)
        elif isinstance(values, np.ndarray) and values.dtype != object:
            _check_numpy(name, values, want, key)
            # numpy has no NULL: NaN is its missing-value marker (as in pandas), so it becomes
            # NULL here; lists and Arrow arrays have None / null for that, and refuse NaN.
            arr = pa.array(values, type=typ, from_pandas=True)
        else:
            if not isinstance(values, list):
                values = list(values)
            _check_python(name, values, want, key)
            arr = pa.array(values, type=typ)
    except ValidationError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
        raise ValidationError(f"column {name!r}: values do not fit type {typ}: "
                              f"{_short(str(e))}") from None
    if len(arr) != n:
        raise ValidationError(f"column {name!r} has {len(arr)} values, expected {n}")
    if want == "float" and len(arr) and pc.any(pc.is_nan(arr)).as_py():
        row = int(np.flatnonzero(pc.fill_null(pc.is_nan(arr), False)
                                 .to_numpy(zero_copy_only=False))[0])
        raise ValidationError(f"column {name!r} row {row}: NaN is not stored; use None for a "
                              f"missing value (in numpy arrays and pandas NaN means missing)")
    return arr


def _to_float32(name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "fiu":            # a bool is not a coordinate
        raise ValidationError(f"column {name!r}: vector values must be numbers, got dtype {a.dtype}")
    if a.dtype == np.float32:
        return a
    with np.errstate(over="ignore"):
        out = a.astype(np.float32)
    return out


def _first_null(arr: pa.Array) -> int:
    return int(np.flatnonzero(~arr.is_valid().to_numpy(zero_copy_only=False))[0])


def _short(s: str, limit: int = 200) -> str:
    return s if len(s) <= limit else s[:limit] + "..."
