"""Runs a `SearchBuilder` request on the right access path and returns row ids + values.

This is the seam between the Python surface and the query layer: it resolves columns, checks
queries, picks exact flat search or an index (and, with filters, the hybrid planner), and maps
internal distances to what users see (`_distance`, or `_score` for inner product and text).
"""
from __future__ import annotations

import numpy as np

from unidb.errors import QueryError
from unidb.index.flat.exact import exact_range, exact_topk

Result = tuple[np.ndarray, np.ndarray]


def run(b) -> tuple[list[Result], bool, str, object]:
    t = b._table
    if b._vectors is not None or b._text is not None or b._sparse is not None:
        raise QueryError("text, sparse, hybrid and multi-vector search need their indexes; "
                         "they are not available in this build yet")
    column, ctype = t.vector_column(b._column)
    queries, single = b._query_matrix(column, ctype, b._vector)
    state = t._state()
    row_mask = t.row_mask_fn(b._where)
    metric = ctype.metric
    if b._range is not None:
        lo, hi = b._range
        results = []
        for q in queries:
            ids, dist = exact_range(state, column, metric, q, lo, hi, row_mask)
            if b._limit_set:
                ids, dist = ids[:b._limit], dist[:b._limit]
            results.append((ids, dist))
    else:
        results = exact_topk(state, column, metric, queries, b._limit, row_mask)
    value_col = "_distance"
    if metric == "ip":
        value_col = "_score"
        results = [(ids, -d) for ids, d in results]
    return results, single, value_col, state


def explain(b, run: bool = True) -> dict:
    """A description of the plan (exact flat scan in this build) and its counters."""
    t = b._table
    column, ctype = t.vector_column(b._column)
    state = t._state()
    info = {"plan": "flat-exact", "column": column, "metric": ctype.metric,
            "rows": state.live_rows, "parts": len(state.parts),
            "filter": None if b._where is None else b._where.to_sql()}
    if b._where is not None:
        info["rows_matched"] = t.count(b._where)
    if run:
        import time
        t0 = time.perf_counter()
        results, *_ = globals()["run"](b)
        info["seconds"] = time.perf_counter() - t0
        info["returned"] = [len(r[0]) for r in results]
    return info
