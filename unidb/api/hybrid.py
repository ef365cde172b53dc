"""Text, sparse and hybrid search for `SearchBuilder` (OneSparse, ALGORITHMS.md §4).

Text (BM25) and sparse-vector queries run on the column's inverted index with exact pruned
top-k. A hybrid request (a vector plus text and/or sparse) fuses the sources *exactly*: every
row that belongs in the fused top-k over the sources' full score lists is found, because the
fusion pulls each source in rank order only until no unseen row can still enter the answer
(`unidb.index.sparse.fusion.exact_fused_topk`). Filters restrict every source to the same rows.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from unidb.errors import QueryError, ValidationError
from unidb.index.flat.exact import all_distances
from unidb.query.explain import Explain
from unidb.schema import SparseVector, Text, parse_sparse

Result = tuple[np.ndarray, np.ndarray]


def _column_of(t, wanted: str | None, kind: type, what: str) -> str:
    cols = [n for n, c in t.schema.columns.items() if isinstance(c, kind)]
    if wanted is not None:
        if wanted not in cols:
            raise QueryError(f"column {wanted!r} is not a {kind.__name__} column; "
                             f"{what} columns: {cols}")
        return wanted
    if len(cols) == 1:
        return cols[0]
    if not cols:
        raise QueryError(f"table {t.name!r} has no {kind.__name__} column for {what} search")
    raise QueryError(f"table {t.name!r} has several {kind.__name__} columns {cols}; pass "
                     f"{what}_column=")


def _allow(t, state, expr):
    """allow(row_ids) -> mask: live in this snapshot and matching the filter."""
    from unidb.api.source import TableSource
    src = TableSource(t, state)
    mask = src.filter_rowmask(expr) if expr is not None else src.live_rowmask()

    def allow(row_ids: np.ndarray) -> np.ndarray:
        row_ids = np.asarray(row_ids, dtype=np.int64)
        ok = row_ids < len(mask)                 # rows newer than the snapshot are not in it
        out = np.zeros(len(row_ids), dtype=bool)
        out[ok] = mask[row_ids[ok]]
        return out
    return allow, mask


def _dense_source(b, state, t, mask_expr):
    """Exact dense scores of every selected row (higher = closer) as a fusion source."""
    from unidb.index.sparse.fusion import ScoresSource
    column, ctype = t.vector_column(b._column)
    q, single = b._query_matrix(column, ctype, b._vector)
    if not single:
        raise ValidationError("hybrid search takes one query vector")
    ids, dist = all_distances(state, column, ctype.metric, q[0], t.row_mask_fn(mask_expr))
    scores = 1.0 - dist if ctype.metric == "cosine" else -dist   # ip: dist = -dot
    return column, ScoresSource(ids, scores)


def run(b, state) -> list[Result]:
    t = b._table
    t0 = time.perf_counter()
    expr = b._where
    allow, mask = _allow(t, state, expr)
    sources: list[tuple[str, Any]] = []
    text_col = sparse_col = None
    if b._text is not None:
        wanted = b._text_column
        if wanted is None and b._vector is None and b._column is not None:
            wanted = b._column                   # t.search(text=..., column="body")
        text_col = _column_of(t, wanted, Text, "text")
        sources.append((f"text:{text_col}", ("text", text_col)))
    if b._sparse is not None:
        wanted = b._sparse_column
        if wanted is None and b._vector is None and b._column is not None and b._text is None:
            wanted = b._column
        sparse_col = _column_of(t, wanted, SparseVector, "sparse")
        qi, qv = parse_sparse(b._sparse, "sparse query")
        sources.append((f"sparse:{sparse_col}", ("sparse", sparse_col, qi, qv)))
    ex = Explain(operator="hybrid" if (b._vector is not None or len(sources) > 1) else "topk",
                 rows_total=state.live_rows, rows_matched=int(mask.sum()), k=b._limit)
    if b._vector is None and len(sources) == 1:
        name, spec = sources[0]
        h = t._indexes.get(spec[1])
        with h.lock:
            if spec[0] == "text":
                ids, scores = h.impl.search(b._text, b._limit, allow)
            else:
                ids, scores = h.impl.search(spec[2], spec[3], b._limit, allow)
        ex.plan = f"{spec[0]}-index"
        ex.reason = "exact pruned top-k over the inverted index"
        ex.rows_returned = len(ids)
        ex.stage_ms["total"] = (time.perf_counter() - t0) * 1e3
        b._explain = [ex]
        return [(ids, scores)]
    from unidb.index.sparse.fusion import IndexSource, exact_fused_topk
    fused_sources, names = [], []
    if b._vector is not None:
        column, dense = _dense_source(b, state, t, expr)
        fused_sources.append(dense)
        names.append(f"vector:{column}")
    for name, spec in sources:
        impl = t._indexes.get(spec[1]).impl
        src = IndexSource(impl, b._text, allow=allow) if spec[0] == "text" else \
            IndexSource(impl, spec[2], spec[3], allow=allow)
        fused_sources.append(src)
        names.append(name)
    method, opts = b._fuse                   # checked by SearchBuilder.fuse (api/knobs.py)
    kwargs: dict[str, Any] = {"limit": b._limit, **opts}
    if isinstance(opts.get("weights"), dict):
        kwargs["weights"] = _weights_by_source(opts["weights"], names)
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
    b._explain = [ex]
    return [(ids, fused)]


def _weights_by_source(weights: dict[str, float], names: list[str]) -> list[float]:
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
