"""Runs a `SearchBuilder` request on the right access path and returns row ids + values.

This is the seam between the Python surface and the query layer: it resolves columns, checks
queries, picks the access path and maps internal distances to what users see (`_distance`, or
`_score` for inner product, text, sparse and hybrid search).

    vector, no index            exact flat scan (filters applied inside the scan: exact, complete)
    vector + partition index    no filter: batched index search; filter or range: the VBase
                                planner (relaxed-monotonic stop, exact finish, never too few rows)
    text / sparse               the column's inverted index (exact pruned top-k)
    vector + text/sparse        exact fusion (every document of the fused top-k is found)
    vectors={...}               multi-vector threshold algorithm
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from unidb.query.knobs import INDEX_KNOBS
from unidb.errors import QueryError, ValidationError
from unidb.index.flat.exact import exact_range, exact_topk
from unidb.query.explain import Explain

Result = tuple[np.ndarray, np.ndarray]


def run(b) -> tuple[list[Result], bool, str, Any]:
    """Execute the builder's request: (per-query results, single?, value column, state).

    The whole request runs on one snapshot with the table's indexes at that snapshot
    (`IndexSet.snapshot`: in a read-only process the indexes catch up to it first), and only
    rows live in that snapshot are returned, so the caller can take them from it."""
    indexes = b._table._indexes
    with indexes.snapshot() as state:
        results, single, value_col, state = _run(b, state)
    if indexes.holds_exactly(state):
        return results, single, value_col, state
    return [_live_only(state, ids, v) for ids, v in results], single, value_col, state


def _live_only(state, ids: np.ndarray, values: np.ndarray) -> Result:
    """Drop row ids not live in `state` (an index fed by a later commit than the snapshot)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return ids, values
    keep = state.is_live(ids)
    if keep.all():
        return ids, values
    return ids[keep], np.asarray(values)[keep]


def _run(b, state) -> tuple[list[Result], bool, str, Any]:
    t = b._table
    b._explain = []
    has_text = b._text is not None or b._sparse is not None
    if b._vectors is not None:
        if has_text:
            raise QueryError("vectors= (multi-vector) cannot be combined with text/sparse yet")
        return _multivector(b, state), True, "_distance", state
    if has_text:
        from unidb.api import hybrid
        return hybrid.run(b, state), True, "_score", state
    column, ctype = t.vector_column(b._column)
    queries, single = b._query_matrix(column, ctype, b._vector)
    results = _vector(b, state, column, ctype, queries)
    value_col = "_distance"
    if ctype.metric == "ip":
        value_col = "_score"
        results = [(ids, -d) for ids, d in results]
    return results, single, value_col, state


def _vector(b, state, column: str, ctype, queries: np.ndarray) -> list[Result]:
    t = b._table
    params = dict(b._params)
    index = t._indexes.vector_index(column)
    expr = b._where
    use_planner = not params.pop("exact", False) and (
        index is not None or (expr is not None and _has_scalar_index(t, expr)))
    t0 = time.perf_counter()
    if not use_planner:
        mask = t.row_mask_fn(expr)
        if b._range is not None:
            lo, hi = b._range
            results = []
            for q in queries:
                ids, d = exact_range(state, column, ctype.metric, q, lo, hi, mask)
                results.append(_cap(b, ids, d))
        else:
            results = exact_topk(state, column, ctype.metric, queries, b._limit, mask)
        b._explain = [_flat_explain(b, state, expr, results, t0)]
        return results
    from unidb.api.source import TableSource
    from unidb.query import planner
    source = TableSource(t, state)
    if b._range is None and expr is None and index is not None and \
            not set(params) - set(INDEX_KNOBS):
        # No filter: the index's own batched search (one GEMM per posting for all queries).
        knobs = {k: v for k, v in params.items() if k in INDEX_KNOBS}
        ids, dist = index.search(queries, b._limit, **knobs)
        results = []
        for i in range(len(queries)):
            keep = ids[i] >= 0
            results.append((ids[i][keep], dist[i][keep]))
        ex = Explain(operator="topk", plan="index", reason="no filter: partition index search",
                     rows_total=state.live_rows, rows_matched=state.live_rows, k=b._limit,
                     k_effective=min(b._limit, state.live_rows),
                     rows_returned=sum(len(r[0]) for r in results))
        ex.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
        ex.details.update({"queries": len(queries), **knobs})
        b._explain = [ex]
        return results
    results = []
    for q in queries:
        if b._range is not None:
            lo, hi = b._range
            ids, d, ex = planner.execute_range(source, column, q, max_distance=hi,
                                               min_distance=lo, expr=expr, params=params)
            ids, d = _cap(b, ids, d)
        else:
            ids, d, ex = planner.execute_topk(source, column, q, b._limit, expr=expr,
                                              params=params)
        b._explain.append(ex)
        results.append((ids, d))
    return results


def _cap(b, ids: np.ndarray, d: np.ndarray) -> Result:
    """A range query returns every row in range unless the user also set a limit."""
    if b._limit_set:
        return ids[:b._limit], d[:b._limit]
    return ids, d


def _has_scalar_index(t, expr) -> bool:
    return any(t._indexes.scalar_index(c) is not None for c in expr.columns())


def _flat_explain(b, state, expr, results, t0) -> Explain:
    matched = state.live_rows if expr is None else b._table.count(expr)
    ex = Explain(operator="range" if b._range is not None else "topk", plan="flat-exact",
                 reason="no vector index" if not b._params.get("exact") else "exact=True",
                 rows_total=state.live_rows, rows_matched=matched, k=b._limit,
                 k_effective=min(b._limit, matched), candidates_visited=matched,
                 distances_computed=matched, rows_returned=sum(len(r[0]) for r in results),
                 stop_reason="exhaustive scan")
    ex.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
    return ex


def _multivector(b, state) -> list[Result]:
    t = b._table
    weights = b._weights or {c: 1.0 for c in b._vectors}     # checked by the builder
    queries = {}
    for c, q in b._vectors.items():
        column, ctype = t.vector_column(c)
        m, single = b._query_matrix(column, ctype, q)
        if not single:
            raise ValidationError(f"multi-vector search takes one query vector per column "
                                  f"({column!r} got {len(m)})")
        queries[column] = m[0]
    from unidb.api.source import TableSource
    from unidb.query import planner
    params = dict(b._params)
    params.pop("exact", None)
    ids, d, ex = planner.execute_multivector(TableSource(t, state), queries,
                                             {c: float(w) for c, w in weights.items()},
                                             b._limit, expr=b._where, params=params)
    b._explain = [ex]
    return [(ids, d)]


def explain(b, run: bool = True):
    """The plan and counters of the search (one Explain, or a list for several queries)."""
    if not run:
        t = b._table
        state = t._state()
        ex = Explain(operator="topk", plan="(not run)", rows_total=state.live_rows, k=b._limit)
        ex.details["filter"] = None if b._where is None else b._where.to_sql()
        return ex
    globals()["run"](b)
    return b._explain[0] if len(b._explain) == 1 else b._explain
