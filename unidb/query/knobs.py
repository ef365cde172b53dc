"""Search knobs: every option a search request carries, its type and its limits, in one place.

A `SearchRequest` (unidb/query/request.py) checks its knobs when it is made (`.params()`,
`.fuse()`, `search(weights=)` on the builder; a request body on the server), so a bad value
fails at once with a `QueryError` naming the knob and the value, whichever access path would
have read it (or none: a planner knob on a table without an index is still checked). The
embedded API, the remote client and `unidb serve` share these checks.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from unidb.errors import QueryError
from unidb.query.multivector import SCHEDULES

# Partitions one query may probe. A partition holds ~100 rows by default, so 2^20 partitions
# cover ~10^8 rows: more than any index here holds; larger values are typos, not tuning.
MAX_NPROBE = 1 << 20
# Rows in a relaxed-monotonicity window (E, w) or a scan batch. A window this wide is already a
# flat scan of a large table; beyond it a value is a typo and only wastes memory.
MAX_WINDOW_ROWS = 1 << 24
# Plans `force_plan=` may name ("flat" is the user-facing name of "exact").
FORCE_PLANS = ("flat", "exact", "index", "scalar", "postfilter")
STOP_STATS = ("median", "min")
# Index knobs travel to the partition index's own batched search; the rest steer the planner.
INDEX_KNOBS = ("nprobe", "eps2", "max_partitions")
PLANNER_KNOBS = ("E", "w", "budget", "force_plan", "scan_knobs", "stop_stat", "schedule",
                 "batch_size")
SCAN_KNOBS = ("batch_partitions", "eps2", "max_partitions")
FUSE_METHODS = ("rrf", "linear")
NORMALIZE = ("minmax", "zscore")
# The kinds of source a hybrid search fuses, as `fuse("linear", weights={...})` names them.
SOURCE_KINDS = ("vector", "text", "sparse")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) \
        and not isinstance(v, (bool, np.bool_))


def is_finite_number(v: Any) -> bool:
    """A real number (not a bool) that float64 holds finitely: no NaN, inf or 10**400."""
    if not _is_number(v):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _int(lo: int, hi: int | None) -> Callable[[str, Any], Any]:
    def check(name: str, v: Any) -> int:
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            top = "" if hi is None else f" and at most {hi:,}"
            raise QueryError(f"search parameter {name} must be an integer >= {lo}{top}, "
                             f"got {v!r}")
        return int(v)
    return check


def _nonneg_float(name: str, v: Any) -> float:
    if not is_finite_number(v) or v < 0:
        raise QueryError(f"search parameter {name} must be a finite number >= 0, got {v!r}")
    return float(v)


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], Any]:
    def check(name: str, v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise QueryError(f"search parameter {name} must be one of {list(options)}, "
                             f"got {v!r}")
        return v
    return check


def _window(name: str, v: Any) -> Any:
    if v == "growing" and isinstance(v, str):
        return v
    return _int(1, MAX_WINDOW_ROWS)(name, v)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise QueryError(f"search parameter {name} must be True or False, got {v!r}")
    return bool(v)


def _scan_knobs(name: str, v: Any) -> dict:
    if not isinstance(v, Mapping):
        raise QueryError(f"search parameter {name} must be a dict of {list(SCAN_KNOBS)}, "
                         f"got {v!r}")
    bad = sorted(map(str, set(v) - set(SCAN_KNOBS)))
    if bad:
        raise QueryError(f"unknown key(s) {bad} in {name}; known: {list(SCAN_KNOBS)}")
    return {k: KNOB_CHECKS[k if k != "batch_partitions" else "max_partitions"](f"{name}.{k}", x)
            for k, x in v.items() if x is not None}


def _schedule(name: str, v: Any) -> str:
    return _choice(SCHEDULES)(name, v)


KNOB_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "nprobe": _int(1, MAX_NPROBE),
    "max_partitions": _int(1, MAX_NPROBE),
    "eps2": _nonneg_float,
    "E": _int(1, MAX_WINDOW_ROWS),
    "w": _window,
    "budget": _int(0, None),                 # rows streamed before the exact finish; 0 = at once
    "force_plan": _choice(FORCE_PLANS),
    "scan_knobs": _scan_knobs,
    "stop_stat": _choice(STOP_STATS),
    "schedule": _schedule,
    "batch_size": _int(1, MAX_WINDOW_ROWS),
    "exact": _bool,
}
KNOBS = tuple(KNOB_CHECKS)


def check_params(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs, checked: QueryError for an unknown name or a value out of its range.
    None leaves a knob at its default."""
    bad = sorted(set(knobs) - set(KNOB_CHECKS))
    if bad:
        raise QueryError(f"unknown search parameter(s) {bad}; known: {list(KNOBS)}")
    return {k: (None if v is None else KNOB_CHECKS[k](k, v)) for k, v in knobs.items()}


def check_fuse(method: Any, options: Mapping[str, Any], sources: list[str]
               ) -> tuple[str, dict[str, Any]]:
    """(method, options) for fusing `sources` (kinds such as ["vector", "text"]), checked."""
    if method not in FUSE_METHODS:
        raise QueryError(f"fuse method must be 'rrf' or 'linear', got {method!r}")
    known = ("k",) if method == "rrf" else ("weights", "normalize")
    extra = sorted(set(options) - set(known))
    if extra:
        raise QueryError(f"unknown option(s) {extra} for fuse({method!r}); known: {list(known)}")
    if method == "rrf":
        k = options.get("k", 60)
        if not is_finite_number(k) or k < 0:
            raise QueryError(f"fuse('rrf') k must be a finite number >= 0 (60 by default), "
                             f"got {k!r}")
        return method, {"k": float(k)}
    normalize = options.get("normalize", "minmax")
    if normalize not in NORMALIZE:
        raise QueryError(f"fuse('linear') normalize must be one of {list(NORMALIZE)}, "
                         f"got {normalize!r}")
    return method, {"weights": _fuse_weights(options.get("weights"), sources),
                    "normalize": normalize}


def _weight(where: str, w: Any) -> float:
    if not is_finite_number(w) or w < 0:
        raise QueryError(f"{where} must be a finite number >= 0, got {w!r}")
    return float(w)


def _fuse_weights(weights: Any, sources: list[str]) -> Any:
    """None, a list with one weight per source, or a dict keyed by source kind ("vector") or
    full name ("text:body"; matched to columns when the search runs)."""
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        out = {}
        for name, w in weights.items():
            kind = name.split(":")[0] if isinstance(name, str) else None
            if kind not in sources:
                raise QueryError(f"fuse weights name an unknown source {name!r}; this search "
                                 f"fuses {sources} (use those names, or 'kind:column')")
            out[name] = _weight(f"fuse weight for {name!r}", w)
        return out
    if isinstance(weights, (list, tuple, np.ndarray)):
        if len(weights) != len(sources):
            raise QueryError(f"fuse weights give {len(weights)} numbers for {len(sources)} "
                             f"sources {sources}")
        return [_weight(f"fuse weight {i}", w) for i, w in enumerate(weights)]
    raise QueryError(f"fuse weights must be a dict {{source: weight}} or a list with one "
                     f"weight per source {sources}, got {weights!r}")


def check_vector_weights(weights: Any, vectors: Any) -> dict[str, float] | None:
    """Multi-vector weights: a dict naming exactly the columns of `vectors`, finite and >= 0."""
    if weights is None:
        return None
    if vectors is None:
        raise QueryError("weights= weighs the columns of a multi-vector search (vectors=); for "
                         "hybrid search use .fuse('linear', weights=...)")
    if not isinstance(weights, Mapping):
        raise QueryError(f"weights= must be a dict {{column: weight}}, got {weights!r}")
    if isinstance(vectors, Mapping) and set(weights) != set(vectors):
        raise QueryError(f"weights= must name the same columns as vectors=: "
                         f"{sorted(map(str, vectors))} vs {sorted(map(str, weights))}")
    return {c: _weight(f"weight for {c!r}", w) for c, w in weights.items()}


__all__ = ["check_params", "check_fuse", "check_vector_weights", "KNOBS", "INDEX_KNOBS",
           "PLANNER_KNOBS", "MAX_NPROBE", "MAX_WINDOW_ROWS"]
