"""Comparisons of Arrow values with SQL semantics, exact across integer and float types.

Arrow compares an int64 array with a float64 value by casting the integers to float64, which
rounds every integer past 2^53 (and refuses to, raising, when one does not round-trip). Filters
need exact answers — the ones DuckDB gives for decimal literals — so an integer side meeting a
float side is ordered here without going through float64 alone.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# `3 < x` says the same as `x > 3`; used to read ranges with the literal on either side.
FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
# Comparison operators in canonical spelling, with Arrow's kernel for each.
COMPARE_KERNELS = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
                   ">": pc.greater, ">=": pc.greater_equal}
# Outcome of each comparison from the sign of left - right (-1, 0, +1).
_BY_SIGN = {"=": (False, True, False), "!=": (True, False, True), "<": (True, False, False),
            "<=": (True, True, False), ">": (False, False, True), ">=": (False, True, True)}
_TWO_63 = float(1 << 63)
# Integers of magnitude up to 2^53 convert to float64 exactly: a comparison of such integers
# with floats is exact in float64, and Arrow's kernels do it in one pass.
_EXACT_IN_FLOAT64 = 1 << 53


def compare(op: str, left: Any, right: Any) -> pa.Array:
    """`left op right` over Arrow arrays / scalars with SQL NULLs. An integer side met by a
    float side is compared exactly (Arrow would round the integer to float64, or refuse values
    past 2^53): 2^53 + 1 > 2^53 as a float, and x > 2.5 holds exactly for x >= 3."""
    lt, rt = left.type, right.type
    if pa.types.is_integer(lt) and pa.types.is_floating(rt):
        return _int_float_compare(op, left, right)
    if pa.types.is_floating(lt) and pa.types.is_integer(rt):
        return _int_float_compare(FLIPPED[op], right, left)
    return COMPARE_KERNELS[op](left, right)


def _numpy_side(v: Any, dtype: Any, fill: Any) -> tuple[Any, Any]:
    """(values, valid) as numpy (or numpy scalars); nulls filled so ints never pass via float."""
    if isinstance(v, pa.Scalar):
        return (np.asarray(v.as_py(), dtype) if v.is_valid else np.asarray(fill, dtype)), \
            np.asarray(v.is_valid)
    valid = np.ones(len(v), dtype=bool) if not v.null_count else \
        v.is_valid().to_numpy(zero_copy_only=False)
    values = pc.fill_null(v, fill) if v.null_count else v
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype), valid


def _exact_as_float64(ints: Any) -> bool:
    """Whether every integer of `ints` (array or scalar) converts to float64 exactly."""
    if isinstance(ints, pa.Scalar):
        return not ints.is_valid or abs(ints.as_py()) <= _EXACT_IN_FLOAT64
    if len(ints) == ints.null_count:
        return True
    lo_hi = pc.min_max(ints)
    return abs(lo_hi["min"].as_py()) <= _EXACT_IN_FLOAT64 and \
        abs(lo_hi["max"].as_py()) <= _EXACT_IN_FLOAT64


def _int_float_compare(op: str, ints: Any, floats: Any) -> pa.Array:
    if _exact_as_float64(ints):                 # the usual case: one Arrow pass, still exact
        return COMPARE_KERNELS[op](pc.cast(ints, pa.float64()), floats)
    i, i_ok = _numpy_side(ints, np.int64, 0)
    f, f_ok = _numpy_side(floats, np.float64, 0.0)
    i, f = np.broadcast_arrays(i, f)
    with np.errstate(invalid="ignore"):
        fi = i.astype(np.float64)               # rounds to nearest: monotone, so when it
        sign = np.sign(fi - f).astype(np.int8)   # differs from f it orders i and f correctly
    # Where fi == f, f is a whole number within [-2^63, 2^63]; compare as integers then.
    tie = np.flatnonzero(fi == f)
    if len(tie):
        ft, it = f[tie], i[tie]
        over = ft >= _TWO_63                    # only 2^63 itself: above every int64
        fint = np.where(over, 0.0, ft).astype(np.int64)
        sign[tie] = np.where(over, -1, (it > fint).astype(np.int8) - (it < fint))
    nan = np.isnan(f)
    lt_, eq_, gt_ = _BY_SIGN[op]
    out = np.where(sign < 0, lt_, np.where(sign > 0, gt_, eq_))
    if nan.any():                               # NaN is unordered: only != holds (IEEE)
        out = np.where(nan, op == "!=", out)
    valid = np.broadcast_to(i_ok & f_ok, out.shape)
    if np.ndim(out) == 0:
        return pa.scalar(bool(out) if valid else None, pa.bool_())
    return pa.array(out, type=pa.bool_(), mask=~valid if not valid.all() else None)


__all__ = ["compare", "COMPARE_KERNELS", "FLIPPED"]
