"""Text, sparse and hybrid search of a `SearchRequest` (OneSparse, ALGORITHMS.md §4).

Text (BM25) and sparse-vector queries run on the column's inverted index with exact pruned
top-k. A hybrid request (a vector plus text and/or sparse) fuses the sources *exactly*: every
row that belongs in the fused top-k over the sources' full score lists is found, because the
fusion pulls each source in rank order only until no unseen row can still enter the answer
(`unidb.index.sparse.fusion.exact_fused_topk`). One `RowFilter`, evaluated once, restricts
every source to the same rows (live in the snapshot and matching the filter).
"""
from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from unidb.errors import QueryError, ValidationError
from unidb.index.flat.exact import all_distances
from unidb.index.rowfilter import RowFilter
from unidb.query.explain import Explain
from unidb.query.filter import row_filter
from unidb.query.request import SearchRequest, Target

Result = tuple[np.ndarray, np.ndarray]


def _dense_source(request: SearchRequest, target: Target, state, rows: RowFilter):
    """Exact dense scores of every allowed row (higher = closer) as a fusion source."""
    from unidb.index.sparse.fusion import ScoresSource
    metric = target.vector_type.metric
    ids, dist = all_distances(state, target.vector_column, metric, request.queries[0], rows)
    scores = 1.0 - dist if metric == "cosine" else -dist   # ip: dist = -dot
    return ScoresSource(ids, scores)


def run(request: SearchRequest, target: Target, table, state
        ) -> tuple[list[Result], list[Explain]]:
    """(results, explains) of a text, sparse or hybrid request on the snapshot `state`."""
    t0 = time.perf_counter()
    # The one evaluation of the filter: every live row of the snapshot when there is none, so
    # rows an index holds from a later commit are never returned.
    rows = row_filter(state, request.where, table.indexes)
    sources: list[tuple[str, Any]] = []
    if target.text_column is not None:
        sources.append((f"text:{target.text_column}", ("text", target.text_column)))
    if target.sparse_column is not None:
        qi, qv = request.sparse
        sources.append((f"sparse:{target.sparse_column}",
                        ("sparse", target.sparse_column, qi, qv)))
    ex = Explain(operator="hybrid" if (request.vector is not None or len(sources) > 1)
                 else "topk", rows_total=state.live_rows, rows_matched=rows.count, k=request.k)
    if request.vector is None and len(sources) == 1:
        name, spec = sources[0]
        h = table.indexes.get(spec[1])
        with h.lock:
            if spec[0] == "text":
                ids, scores = h.impl.search(request.text, request.k, rows)
            else:
                ids, scores = h.impl.search(spec[2], spec[3], request.k, rows)
        ex.plan = f"{spec[0]}-index"
        ex.reason = "exact pruned top-k over the inverted index"
        ex.rows_returned = len(ids)
        ex.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
        return [(ids, scores)], [ex]
    from unidb.index.sparse.fusion import IndexSource, exact_fused_topk
    fused_sources, names = [], []
    if request.vector is not None:
        fused_sources.append(_dense_source(request, target, state, rows))
        names.append(f"vector:{target.vector_column}")
    for name, spec in sources:
        impl = table.indexes.get(spec[1]).impl
        src = IndexSource(impl, request.text, allow=rows) if spec[0] == "text" else \
            IndexSource(impl, spec[2], spec[3], allow=rows)
        fused_sources.append(src)
        names.append(name)
    method, opts = request.fuse              # checked by the request (unidb/query/knobs.py)
    kwargs: dict[str, Any] = {"limit": request.k, **opts}
    weights = opts.get("weights")
    if isinstance(weights, Mapping):
        kwargs["weights"] = _weights_by_source(weights, names)
    elif weights is not None:
        kwargs["weights"] = list(weights)
    info: dict = {}
    try:
        ids, fused = exact_fused_topk(fused_sources, method, info=info, **kwargs)
    except ValidationError as e:
        raise QueryError(str(e)) from None
    ex.plan = f"exact-fusion-{method}"
    ex.reason = "exact fused top-k: each source pulled in rank order until no unseen row can enter"
    ex.rows_returned = len(ids)
    ex.details["sources"] = names
    ex.details["fusion"] = {k: v for k, v in info.items() if isinstance(v, (int, float, str, list))}
    ex.details["contributions"] = [
        {"row_id": int(r), **{n: _score_or_none(s, r) for n, s in zip(names, fused_sources)}}
        for r in ids]
    ex.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
    return [(ids, fused)], [ex]


def _weights_by_source(weights: Mapping[str, float], names: list[str]) -> list[float]:
    """One weight per fused source, from a dict keyed by "kind" or "kind:column"."""
    unknown = sorted(set(weights) - set(names) - {n.split(":")[0] for n in names})
    if unknown:
        raise QueryError(f"fuse weights name unknown source(s) {unknown}; this search fuses "
                         f"{names}")
    out = []
    for n in names:
        w = weights.get(n, weights.get(n.split(":")[0]))
        if w is None:
            raise QueryError(f"fuse weights must give a number for every source {names} "
                             f"(by kind, e.g. 'text', or by full name)")
        out.append(w)
    return out


def _score_or_none(src, row_id: int) -> float | None:
    v = float(src.scores_for(np.array([row_id], dtype=np.int64))[0])
    return None if np.isnan(v) else v
