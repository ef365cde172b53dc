"""JSON forms of the values a search request holds that JSON cannot say well.

* A float32 vector or matrix travels as ``{"b64": "<little-endian float32>", "shape": [n,
  dim]}``: exact for float32 (what every search computes with) and about a quarter of the size
  of a list of decimals.
* A filter tree travels as ``{"expr": Expr.to_json()}``, its nesting bounded before it is read.

`SearchRequest.to_json()` (unidb/query/request.py) and the wire format of client and server
(unidb/protocol/wire.py) both use these functions.
"""
from __future__ import annotations

import base64
import math
from typing import Any, Mapping

import numpy as np

from unidb.errors import QueryError, ValidationError
from unidb.query.filter_tree import MAX_DEPTH, Expr

B64 = "b64"
EXPR = "expr"


def is_b64_vector(v: Any) -> bool:
    """Whether a JSON value is a `{"b64": ..., "shape": ...}` vector object."""
    return isinstance(v, Mapping) and B64 in v and set(v) <= {B64, "shape"}


def encode_vector(a: Any) -> dict:
    """A numeric array (any shape) as little-endian float32 base64 with its shape."""
    arr = np.ascontiguousarray(np.asarray(a, dtype="<f4"))
    return {B64: base64.b64encode(arr.tobytes()).decode("ascii"), "shape": list(arr.shape)}


def decode_vector(d: Mapping) -> np.ndarray:
    """The float32 array a `{"b64": ..., "shape": ...}` object holds."""
    data = d.get(B64)
    if not isinstance(data, str):
        raise _bad_vector(f"'b64' must be a base64 string, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as e:
        raise _bad_vector(f"'b64' is not base64: {e}") from None
    if len(raw) % 4:
        raise _bad_vector(f"{len(raw)} bytes is not a whole number of float32 values")
    arr = np.frombuffer(raw, dtype="<f4")
    shape = vector_shape(d)
    if shape is not None:
        if math.prod(shape) != arr.size:
            raise _bad_vector(f"shape {shape} needs {math.prod(shape)} values, 'b64' holds "
                              f"{arr.size}")
        arr = arr.reshape(shape)
    return arr.astype(np.float32, copy=False)


def vector_shape(d: Mapping) -> list[int] | None:
    """The checked `shape` of a b64 vector object: None or a list of non-negative ints."""
    shape = d.get("shape")
    if shape is None:
        return None
    if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise _bad_vector(f"'shape' must be a list of non-negative integers like [n, dim], "
                          f"got {shape!r}")
    return shape


def _bad_vector(why: str) -> ValidationError:
    return ValidationError(f"bad base64 vector (expected {{'b64': little-endian float32, "
                           f"'shape': [n, dim]}}): {why}")


# -- filter trees ------------------------------------------------------------------------------
def depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value (a scalar is 0), counting no further than limit + 1."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            d += 1
            if d > deepest:
                deepest = d
                if d > limit:
                    return d
            stack.extend((x, d) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def decode_expr(tree: Any) -> Expr:
    """The filter Expr a `{"expr": ...}` tree describes, its depth bounded like filter text."""
    # An and/or level is two JSON levels (object, args list); text allows MAX_DEPTH levels.
    limit = 2 * MAX_DEPTH + 2
    if depth(tree, limit) > limit:
        raise QueryError(f"filter JSON nests deeper than {limit} levels (filter text allows "
                         f"{MAX_DEPTH}); flatten the and/or/not tree")
    return Expr.from_json(tree)


__all__ = ["B64", "EXPR", "is_b64_vector", "encode_vector", "decode_vector", "vector_shape",
           "depth", "decode_expr"]
