"""The JSON wire format shared by `unidb serve` and the remote client.

Values travel as plain JSON, with three encodings for what JSON cannot say well:

* a float32 vector or matrix as ``{"b64": "<little-endian float32>", "shape": [n, dim]}``
  (a plain list of numbers is accepted everywhere a vector is);
* a filter tree (``unidb.col("x") < 3``) as ``{"expr": Expr.to_json()}``;
* an Arrow table as ``{"schema": "<b64 Arrow IPC schema>", "num_rows": n, "columns": {...}}``
  where vector columns without nulls may be a b64 matrix; the schema keeps types exact.

This module imports neither FastAPI nor httpx: both sides use it.
"""
from __future__ import annotations

import base64
import json
import math
import re
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from unidb.errors import ValidationError
from unidb.query.codec import (B64, EXPR, decode_expr, decode_vector, depth, encode_vector,
                               is_b64_vector, vector_shape)

__all__ = ["loads", "check_text", "depth", "encode_vector", "decode_vector", "vector_shape",
           "to_jsonable", "from_jsonable", "decode_expr", "encode_rows", "decode_rows",
           "count_rows", "encode_table", "decode_table", "B64", "EXPR", "MAX_JSON_DEPTH"]

# Request values nest a few levels (a vector matrix is 2, a sparse vector or row is 2-3); a
# bound far above that keeps every recursive walk over a request well inside Python's
# recursion limit, so hostile nesting is a ValidationError, never a RecursionError.
MAX_JSON_DEPTH = 64
# A lone surrogate can only arrive as a \uD800-\uDFFF escape (strict UTF-8 refuses the raw
# bytes); bodies without such an escape (nearly all) skip the walk that looks for one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


# -- request bodies ----------------------------------------------------------------------------
def loads(body: bytes) -> Any:
    """A request body as JSON: UTF-8, no lone surrogates, bounded nesting; anything else is a
    ValidationError naming the fault. NaN and Infinity are read as Python writes them (float
    columns may hold them, as in the embedded API); fields that must be finite or integral
    say so in their request model."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationError(f"request body is not UTF-8 (byte {e.start}): send JSON as "
                              f"UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        # json.loads recurses once per nesting level of the input and nowhere else.
        raise ValidationError(f"request JSON nests deeper than the parser allows; keep it "
                              f"under {MAX_JSON_DEPTH} levels") from None
    if _SURROGATE_ESCAPE.search(text):
        check_text(value)
    return value


def check_text(value: Any) -> None:
    """Refuse strings (and keys) holding a lone UTF-16 surrogate: no UTF-8 text can carry one,
    so they could be neither stored nor matched."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            _check_str(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                _check_str(k)
                stack.append(x)
        elif isinstance(v, list):
            stack.extend(v)


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValidationError(f"string {s[max(e.start - 20, 0):e.start + 20]!r} holds a lone "
                              f"surrogate {s[e.start]!r} at offset {e.start}: not valid "
                              f"Unicode text") from None


# -- vectors: the float32 base64 form lives beside the search request (unidb/query/codec.py) --
def _numeric_matrix(values: Any) -> np.ndarray | None:
    """`values` as a 2-D float array when it is one (no None, equal lengths), else None."""
    if isinstance(values, np.ndarray):
        return values if values.ndim == 2 and values.dtype.kind in "fiu" else None
    if not isinstance(values, (list, tuple)) or not values:
        return None
    first = values[0]
    if first is None or isinstance(first, (str, bytes, dict)) or not hasattr(first, "__len__"):
        return None
    try:
        m = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return m if m.ndim == 2 else None


# -- generic values ----------------------------------------------------------------------------
def to_jsonable(v: Any, vectors_b64: bool = True) -> Any:
    """Make a request argument JSON-ready: numpy -> lists/b64, filter trees -> {"expr"}."""
    from unidb.query.filter_tree import Expr
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Expr):
        return {EXPR: v.to_json()}
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "f" and vectors_b64:
            return encode_vector(v)
        return v.tolist()
    if isinstance(v, (pa.Array, pa.ChunkedArray)):
        return v.to_pylist()
    if isinstance(v, Mapping):
        if _is_sparse_dict(v):
            return {"indices": [int(k) for k in v.keys()],
                    "values": [float(x) for x in v.values()]}
        return {str(k): to_jsonable(x, vectors_b64) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        if vectors_b64:
            m = _numeric_matrix(v)
            if m is not None and m.dtype.kind == "f":
                return encode_vector(m)
        return [to_jsonable(x, vectors_b64) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def _is_sparse_dict(v: Mapping) -> bool:
    """{term_id: weight} with integer keys (JSON would turn them into strings)."""
    return bool(v) and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                           for k in v.keys())


def from_jsonable(v: Any, _depth: int = 0) -> Any:
    """Inverse of `to_jsonable` on the server: b64 objects -> arrays, {"expr"} -> Expr."""
    if _depth > MAX_JSON_DEPTH:
        raise ValidationError(f"request value nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(v, dict):
        if is_b64_vector(v):
            return decode_vector(v)
        if EXPR in v and len(v) == 1:
            return decode_expr(v[EXPR])
        return {k: from_jsonable(x, _depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [from_jsonable(x, _depth + 1) for x in v]
    return v


# -- rows in -----------------------------------------------------------------------------------
def encode_rows(rows: Any) -> dict[str, Any]:
    """Any input `Table.add` accepts, as JSON-ready columns {name: values}."""
    columns = _columns(rows)
    return {name: _encode_column(values) for name, values in columns.items()}


def _columns(rows: Any) -> dict[str, Any]:
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if isinstance(rows, pa.Table):
        return {n: _arrow_column(rows.column(n)) for n in rows.column_names}
    try:
        import pandas as pd
        if isinstance(rows, pd.DataFrame):
            return {str(c): (rows[c].to_numpy() if rows[c].dtype != object else list(rows[c]))
                    for c in rows.columns}
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if isinstance(rows, Mapping):
        return {str(k) if not isinstance(k, str) else k: v for k, v in rows.items()}
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise ValidationError(f"rows must be a list of dicts, a dict of columns, a pandas "
                              f"DataFrame or a pyarrow Table/RecordBatch, got "
                              f"{type(rows).__name__}")
    out: dict[str, list] = {}
    rows = list(rows)
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise ValidationError(f"row {i} is a {type(r).__name__}, expected a dict")
        for k in r:
            out.setdefault(k, None)
    return {k: [r.get(k) for r in rows] for k in out}


def _arrow_column(col: pa.ChunkedArray) -> Any:
    """A column's values; a float vector column without nulls as an (n, dim) matrix."""
    t = col.type
    if pa.types.is_fixed_size_list(t) and col.null_count == 0 \
            and pa.types.is_floating(t.value_type) and len(col):
        flat = pa.concat_arrays([c.flatten() for c in col.chunks])
        return flat.to_numpy(zero_copy_only=False).reshape(len(col), t.list_size)
    return col.to_pylist()


def _encode_column(values: Any) -> Any:
    if isinstance(values, np.ndarray):
        if values.ndim == 2 and values.dtype.kind in "fiu":
            return encode_vector(values)
        if values.dtype.kind == "f":
            # In numpy (and pandas) NaN is the missing-value marker: send it as null, as the
            # embedded API stores it; ±inf go as JSON Infinity for the server to judge. Never
            # through float32 base64, which would round float64 values.
            out = values.tolist()
            return [None if x != x else x for x in out] if np.isnan(values).any() else out
        if values.dtype.kind == "O":
            return _encode_column(list(values))
        return values.tolist()
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return _encode_column(_arrow_column(pa.chunked_array(values)
                                            if isinstance(values, pa.Array) else values))
    if isinstance(values, (list, tuple)):
        m = _numeric_matrix(values)
        if m is not None:
            return encode_vector(m)
        return [to_jsonable(v, vectors_b64=False) if not isinstance(v, np.ndarray)
                else _plain_vector(v) for v in values]
    return to_jsonable(values)


def _plain_vector(v: np.ndarray) -> Any:
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        return encode_vector(v)
    return v.tolist()


def decode_rows(columns: Mapping[str, Any]) -> dict[str, Any]:
    """Server side: the columns `encode_rows` wrote, ready for `Schema.to_batch`."""
    out: dict[str, Any] = {}
    for name, values in columns.items():
        if isinstance(values, dict) and B64 in values:
            out[name] = decode_vector(values)
        elif isinstance(values, list):
            out[name] = [decode_vector(v) if isinstance(v, dict) and B64 in v else v
                         for v in values]
        else:
            out[name] = values
    return out


def count_rows(columns: Mapping[str, Any]) -> int:
    """Rows in an encoded column dict (the longest column; the server validates the rest)."""
    n = 0
    for v in columns.values():
        if isinstance(v, dict) and B64 in v:
            shape = vector_shape(v)
            n = max(n, shape[0] if shape else 0)
        elif isinstance(v, list):
            n = max(n, len(v))
    return n


# -- tables out --------------------------------------------------------------------------------
def encode_table(table: pa.Table, vectors_b64: bool = False) -> dict:
    """An Arrow table as JSON columns plus its exact schema (base64 Arrow IPC)."""
    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        t = col.type
        if vectors_b64 and pa.types.is_fixed_size_list(t) and col.null_count == 0 \
                and pa.types.is_floating(t.value_type):
            cols[name] = encode_vector(_arrow_column(col)) if len(col) else []
        elif pa.types.is_floating(t):
            # JSON has no NaN/inf: they travel as the strings "NaN", "Infinity", "-Infinity"
            # (protobuf's JSON convention), never as null, which means a missing value.
            cols[name] = [x if x is None or math.isfinite(x) else _NONFINITE_OUT[repr(x)]
                          for x in col.to_pylist()] if _has_nonfinite(col) else col.to_pylist()
        else:
            cols[name] = _json_safe(col.to_pylist())
    schema = base64.b64encode(table.schema.serialize().to_pybytes()).decode("ascii")
    return {"schema": schema, "num_rows": table.num_rows, "columns": cols}


_NONFINITE_OUT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_NONFINITE_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _has_nonfinite(col: pa.ChunkedArray) -> bool:
    import pyarrow.compute as pc
    return bool(len(col)) and not pc.all(pc.is_finite(col.fill_null(0.0))).as_py()


def _json_safe(values: list) -> list:
    """Arrow values JSON cannot hold (bytes, dates) become strings."""
    if values and isinstance(next((v for v in values if v is not None), None),
                             (bytes, bytearray)):
        return [None if v is None else base64.b64encode(v).decode("ascii") for v in values]
    if values and not isinstance(next((v for v in values if v is not None), 0),
                                 (int, float, str, bool, list, dict)):
        return [None if v is None else str(v) for v in values]
    return values


def decode_table(d: Mapping) -> pa.Table:
    """The Arrow table `encode_table` wrote, with its exact types."""
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(d["schema"])))
    arrays = []
    for field in schema:
        values = d["columns"][field.name]
        if isinstance(values, dict) and B64 in values:
            m = decode_vector(values)
            flat = pa.array(m.reshape(-1).astype(field.type.value_type.to_pandas_dtype()))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        elif pa.types.is_floating(field.type):
            arrays.append(pa.array([_NONFINITE_IN[v] if isinstance(v, str) else v
                                    for v in values], type=field.type))
        elif pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            arrays.append(pa.array([None if v is None else base64.b64decode(v) for v in values],
                                   type=field.type))
        else:
            try:
                arrays.append(pa.array(values, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                arrays.append(pa.array(values).cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
