"""The executor's entry points: filtered top-k, distance range, multi-vector top-k and
similarity join over a DataSource (ALGORITHMS.md §1).

Each builds one `Plan` (unidb/query/plan.py: the filter stage and the cost-based choice of
path, shared with the join) and runs its operator on it. `expr` is a filter (evaluated once by
the plan) or the query's `RowFilter`, already evaluated by a caller that runs several query
vectors on one filter (`select_rows` makes it). `k` is checked by the caller (the request's
one rule, unidb/query/request.py); 0 asks for no rows. The thresholds that choose the path are
named in plan.py and re-exported here.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np

from unidb.errors import ValidationError
from unidb.index.flat.scan import query_vector
from unidb.query.explain import Explain
from unidb.query.join import join_batches
from unidb.query.multivector import multivector_topk
from unidb.query.plan import Plan, plan_params, range_planned, select_rows, topk_planned


def execute_topk(source, column: str, query: np.ndarray, k: int, expr=None,
                 params: dict[str, Any] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, Explain]:
    """The k nearest live rows to `query` on `column` that satisfy `expr`: (ids, distances,
    Explain), nearest first; always min(k, matching rows) rows."""
    params = plan_params(params)
    explain = Explain(operator="topk")
    t0 = time.perf_counter()
    dim, _ = source.vector_column(column)
    q = query_vector(query, dim)
    plan = Plan(source, column, expr, params, explain, int(k))
    ids, d = topk_planned(plan, q, int(k))
    explain.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
    return ids, d, explain


def execute_range(source, column: str, query: np.ndarray, max_distance: float | None = None,
                  min_distance: float | None = None, expr=None,
                  params: dict[str, Any] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, Explain]:
    """Every live row satisfying `expr` with min_distance <= distance <= max_distance."""
    if max_distance is None and min_distance is None:
        raise ValidationError("distance_range needs max_distance, min_distance or both")
    if max_distance is not None and min_distance is not None and min_distance > max_distance:
        raise ValidationError(f"min_distance {min_distance} > max_distance {max_distance}")
    params = plan_params(params)
    explain = Explain(operator="range")
    t0 = time.perf_counter()
    dim, _ = source.vector_column(column)
    q = query_vector(query, dim)
    plan = Plan(source, column, expr, params, explain, None)
    ids, d = range_planned(plan, q, min_distance, max_distance)
    explain.details["max_distance"], explain.details["min_distance"] = max_distance, min_distance
    explain.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
    return ids, d, explain


def execute_multivector(source, queries: dict[str, np.ndarray], weights: dict[str, float],
                        k: int, expr=None, params: dict[str, Any] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, Explain]:
    """Top-k by the weighted sum of per-column distances (threshold algorithm)."""
    return multivector_topk(source, queries, weights, k, expr, plan_params(params))


def similarity_join(left_source, right_source, on: tuple[str, str],
                    max_distance: float | None = None, k: int | None = None,
                    expr_left=None, expr_right=None, params: dict[str, Any] | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Stream of (left_ids, right_ids, distances) batches pairing each left row with its right
    rows within max_distance (or its k nearest); the cross product is never materialised."""
    return join_batches(left_source, right_source, on, max_distance, k, expr_left, expr_right,
                        plan_params(params))


__all__ = ["execute_topk", "execute_range", "execute_multivector", "similarity_join",
           "select_rows"]
