"""Runs a `SearchRequest` on one table snapshot and returns a `SearchResult`.

This is the seam between a request (unidb/query/request.py) and the access paths: it takes a
snapshot, evaluates the filter once into the query's `RowFilter` (unidb/index/rowfilter.py),
picks the access path, hands it that RowFilter, and maps internal distances to what users see
(`_distance`, or `_score` for inner product, text, sparse and hybrid search).

    vector, no index            exact flat scan (the RowFilter inside the scan: exact, complete)
    vector + partition index    no filter: batched index search; filter or range: the VBase
                                planner (relaxed-monotonic stop, exact finish, never too few rows)
    text / sparse               the column's inverted index (exact pruned top-k)  -> hybrid.py
    vector + text/sparse        exact fusion (every document of the fused top-k is found)
    vectors={...}               multi-vector threshold algorithm
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from unidb.index.flat.exact import exact_range, exact_topk
from unidb.index.rowfilter import RowFilter
from unidb.query.explain import Explain
from unidb.query.filter import row_filter
from unidb.query.knobs import INDEX_KNOBS
from unidb.query.request import DISTANCE, SCORE, SearchRequest, Target
from unidb.query.result import SearchResult

Result = tuple[np.ndarray, np.ndarray]


def run(request: SearchRequest, table) -> SearchResult:
    """Run `request` on `table`: one snapshot, with the table's indexes at that snapshot
    (`IndexSet.snapshot`: in a read-only process the indexes catch up to it first). Only rows
    live in that snapshot are returned, so the result reads its rows from it."""
    indexes = table.indexes
    with indexes.snapshot() as state:
        result = execute(request, table, state)
    if indexes.holds_exactly(state):
        return result
    live = [_live_only(state, ids, v) for ids, v in zip(result.row_ids, result.values)]
    return dataclasses.replace(result, row_ids=tuple(ids for ids, _ in live),
                               values=tuple(v for _, v in live))


def _live_only(state, ids: np.ndarray, values: np.ndarray) -> Result:
    """Drop row ids not live in `state` (an index fed by a later commit than the snapshot)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return ids, values
    keep = state.is_live(ids)
    if keep.all():
        return ids, values
    return ids[keep], np.asarray(values)[keep]


def execute(request: SearchRequest, table, state) -> SearchResult:
    """Run `request` on the snapshot `state` of `table` (its indexes at or past `state`)."""
    target = request.resolve(table.schema, table.name)
    if request.vectors is not None:
        results, explains, value_col = _multivector(request, target, table, state)
    elif request.text is not None or request.sparse is not None:
        from unidb.engine import hybrid
        results, explains = hybrid.run(request, target, table, state)
        value_col = SCORE
    else:
        results, explains = _vector(request, target, table, state)
        value_col = DISTANCE
        if target.vector_type.metric == "ip":
            value_col = SCORE
            results = [(ids, -d) for ids, d in results]
    return SearchResult(row_ids=tuple(ids for ids, _ in results),
                        values=tuple(v for _, v in results), value_column=value_col,
                        single=request.single, explain=tuple(explains), snapshot=state,
                        schema=table.schema, columns=target.columns)


def _filter(request: SearchRequest, table, state) -> RowFilter | None:
    """The request's filter evaluated once on `state` (None when it has none)."""
    if request.where is None:
        return None
    return row_filter(state, request.where, table.indexes)


def _vector(request: SearchRequest, target: Target, table, state
            ) -> tuple[list[Result], list[Explain]]:
    column, ctype = target.vector_column, target.vector_type
    queries = request.queries
    params = dict(request.params)
    exact = params.pop("exact", False)
    index = table.indexes.vector_index(column)
    expr = request.where
    use_planner = not exact and (
        index is not None or (expr is not None and _has_scalar_index(table, expr)))
    t0 = time.perf_counter()
    if not use_planner:
        rows = _filter(request, table, state)
        if request.distance_range is not None:
            lo, hi = request.distance_range
            results = [_cap(request, *exact_range(state, column, ctype.metric, q, lo, hi, rows))
                       for q in queries]
        else:
            results = exact_topk(state, column, ctype.metric, queries, request.k, rows)
        return results, [_flat_explain(request, state, rows, results, t0)]
    from unidb.engine.source import TableSource
    from unidb.query import planner
    source = TableSource(table, state)
    if request.distance_range is None and expr is None and index is not None and \
            not set(params) - set(INDEX_KNOBS):
        # No filter: the index's own batched search (one GEMM per posting for all queries).
        knobs = {k: v for k, v in params.items() if k in INDEX_KNOBS}
        ids, dist = index.search(queries, request.k, **knobs)
        results = []
        for i in range(len(queries)):
            keep = ids[i] >= 0
            results.append((ids[i][keep], dist[i][keep]))
        ex = Explain(operator="topk", plan="index", reason="no filter: partition index search",
                     rows_total=state.live_rows, rows_matched=state.live_rows, k=request.k,
                     k_effective=min(request.k, state.live_rows),
                     rows_returned=sum(len(r[0]) for r in results))
        ex.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
        ex.details.update({"queries": len(queries), **knobs})
        return results, [ex]
    # The filter is evaluated once for every query vector of the request (on the rows of a
    # selective indexed range when one qualifies: the planner's scalar-driven path).
    rows = planner.select_rows(source, expr, params, int(source.live_rowmask().sum()))
    filter_ms = (time.perf_counter() - t0) * 1e3
    results, explains = [], []
    for q in queries:
        if request.distance_range is not None:
            lo, hi = request.distance_range
            ids, d, ex = planner.execute_range(source, column, q, max_distance=hi,
                                               min_distance=lo, expr=rows, params=params)
            ids, d = _cap(request, ids, d)
        else:
            ids, d, ex = planner.execute_topk(source, column, q, request.k, expr=rows,
                                              params=params)
        if not explains:                     # the one filter evaluation, on the first query
            ex.stage_ms["filter"] = filter_ms
            ex.stage_ms["total"] = ex.stage_ms.get("total", 0.0) + filter_ms
        explains.append(ex)
        results.append((ids, d))
    return results, explains


def _cap(request: SearchRequest, ids: np.ndarray, d: np.ndarray) -> Result:
    """A range query returns every row in range unless the user also set a limit."""
    if request.limit is not None:
        return ids[:request.limit], d[:request.limit]
    return ids, d


def _has_scalar_index(table, expr) -> bool:
    return any(table.indexes.scalar_index(c) is not None for c in expr.columns())


def _flat_explain(request: SearchRequest, state, rows: RowFilter | None,
                  results: list[Result], t0: float) -> Explain:
    matched = state.live_rows if rows is None else rows.count
    ex = Explain(operator="range" if request.distance_range is not None else "topk",
                 plan="flat-exact",
                 reason="no vector index" if not request.params.get("exact") else "exact=True",
                 rows_total=state.live_rows, rows_matched=matched, k=request.k,
                 k_effective=min(request.k, matched), candidates_visited=matched,
                 distances_computed=matched, rows_returned=sum(len(r[0]) for r in results),
                 stop_reason="exhaustive scan")
    ex.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
    return ex


def _multivector(request: SearchRequest, target: Target, table, state
                 ) -> tuple[list[Result], list[Explain], str]:
    from unidb.engine.source import TableSource
    from unidb.query import planner
    weights = request.weights or {c: 1.0 for c in request.vectors}
    params = dict(request.params)
    params.pop("exact", None)
    ids, d, ex = planner.execute_multivector(
        TableSource(table, state), dict(request.vectors), dict(weights), request.k,
        expr=_filter(request, table, state), params=params)
    return [(ids, d)], [ex], DISTANCE
