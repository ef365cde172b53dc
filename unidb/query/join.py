"""Similarity join: pair each (filtered) left row with the right rows within a distance or its
k nearest right rows (ALGORITHMS.md §1: each outer row seeds a range or top-k scan).

The right side is planned once (filter mask, exact count, path). With a vector index on the
right column, every left row streams the index with the relaxed-monotonic stop. Without one
(or when few right rows match), blocks of left rows are scored against the matching right rows
with one GEMM per block: exact, and memory stays bounded by JOIN_BLOCK_CELLS whatever the
table sizes. Batches are yielded as they are produced; the cross product never exists.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from unidb.errors import ValidationError
from unidb.index.flat.scan import exact_distances
from unidb.query.explain import Explain
from unidb.query.operators import TopK, evaluated
from unidb.query.plan import Plan, range_planned, topk_planned

# Distance cells (left rows x right rows) computed per GEMM block: 4M float64 = 32 MB.
JOIN_BLOCK_CELLS = 4_000_000
# Relative slack when pre-selecting range pairs from the float32 GEMM before the exact
# float64 re-check (float32 |x|^2 - 2xy + |y|^2 loses ~1e-6 relative).
_RANGE_SLACK = 1e-4


def _block_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray, metric: str) -> np.ndarray:
    dots = (a @ b.T).astype(np.float64)
    if metric == "ip":
        return -dots
    a_sq = np.einsum("ij,ij->i", a, a, dtype=np.float64)
    if metric == "cosine":
        denom = np.sqrt(np.outer(a_sq, b_sq))
        return 1.0 - np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    return np.sqrt(np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * dots, 0.0))


def join_batches(left, right, on: tuple[str, str], max_distance: float | None, k: int | None,
                 expr_left, expr_right, params: dict[str, Any]
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Generator behind planner.similarity_join; params may carry an `explain` list to fill."""
    if (max_distance is None) == (k is None):
        raise ValidationError("similarity_join needs exactly one of max_distance or k")
    lcol, rcol = on
    ldim, lmetric = left.vector_column(lcol)
    rdim, rmetric = right.vector_column(rcol)
    if ldim != rdim or lmetric != rmetric:
        raise ValidationError(f"join columns differ: {lcol} is {ldim}-d {lmetric}, "
                              f"{rcol} is {rdim}-d {rmetric}")
    left_ids = evaluated(left, expr_left).row_ids()
    explain = Explain(operator="join")
    if isinstance(params.get("explain"), list):
        params["explain"].append(explain)
    plan = Plan(right, rcol, expr_right, params, explain, k)
    explain.details["left_rows"] = len(left_ids)
    if plan.kind == "index":
        yield from _index_join(left, lcol, left_ids, plan, max_distance, k)
    else:
        yield from _block_join(left, lcol, left_ids, right, rcol, plan.rows.row_ids(),
                               rmetric, max_distance, k, explain)


def _index_join(left, lcol, left_ids, plan: Plan, max_distance, k):
    chunk = int(plan.params.get("join_chunk", 256))
    for a in range(0, len(left_ids), chunk):
        ids = left_ids[a:a + chunk]
        vecs = left.vectors(lcol, ids)
        out_l, out_r, out_d = [], [], []
        for lid, v in zip(ids.tolist(), vecs):
            if k is not None:
                r, d = topk_planned(plan, v.astype(np.float64), k)
            else:
                r, d = range_planned(plan, v.astype(np.float64), None, max_distance)
            out_l.append(np.full(len(r), lid, dtype=np.int64))
            out_r.append(r)
            out_d.append(d)
        if out_l:
            yield np.concatenate(out_l), np.concatenate(out_r), np.concatenate(out_d)


def _block_join(left, lcol, left_ids, right, rcol, right_ids, metric, max_distance, k,
                explain: Explain):
    if len(right_ids) == 0 or len(left_ids) == 0:
        return
    rmat = right.vectors(rcol, right_ids)
    r_sq = np.einsum("ij,ij->i", rmat, rmat, dtype=np.float64)
    rows_per_block = max(1, JOIN_BLOCK_CELLS // len(right_ids))
    for a in range(0, len(left_ids), rows_per_block):
        lids = left_ids[a:a + rows_per_block]
        lmat = left.vectors(lcol, lids)
        with explain.stage("gemm"):
            D = _block_distances(lmat, rmat, r_sq, metric)
        explain.distances_computed += D.size
        if max_distance is not None:
            slack = _RANGE_SLACK * max(abs(max_distance), 1.0)
            if metric == "l2":
                # sqrt magnifies float32 rounding near 0: an error e in d^2 becomes sqrt(e)
                # in d, so exact duplicates can read as ~1e-3 apart. Widen by that much.
                scale = float(r_sq.max()) + float(np.einsum("ij,ij->i", lmat, lmat).max())
                slack = max(slack, float(np.sqrt(1e-6 * scale)))
            li, ri = np.nonzero(D <= max_distance + slack)
            d = _pairwise_exact(lmat[li], rmat[ri], metric)
            ok = d <= max_distance
            li, ri, d = li[ok], ri[ok], d[ok]
        else:
            kk = min(k, len(right_ids))
            part = np.argpartition(D, kk - 1, axis=1)[:, :kk] if kk < D.shape[1] \
                else np.tile(np.arange(D.shape[1]), (len(lids), 1))
            li = np.repeat(np.arange(len(lids)), kk)
            ri = part.reshape(-1)
            d = _pairwise_exact(lmat[li], rmat[ri], metric)
        order = np.lexsort((right_ids[ri], d, li))
        li, ri, d = li[order], ri[order], d[order]
        explain.rows_returned += len(li)
        if len(li):
            yield lids[li], right_ids[ri], d


def _pairwise_exact(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if metric == "l2":
        return np.sqrt(np.einsum("ij,ij->i", a - b, a - b))
    dots = np.einsum("ij,ij->i", a, b)
    if metric == "ip":
        return -dots
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return 1.0 - np.divide(dots, na, out=np.zeros_like(dots), where=na > 0)


def nested_loop_join(left, right, on: tuple[str, str], max_distance: float | None = None,
                     k: int | None = None, expr_left=None, expr_right=None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference join: one exact distance vector per left row (tests and benchmarks)."""
    lcol, rcol = on
    _, metric = right.vector_column(rcol)
    lids = evaluated(left, expr_left).row_ids()
    rids = evaluated(right, expr_right).row_ids()
    rmat = right.vectors(rcol, rids)
    out_l, out_r, out_d = [], [], []
    for lid in lids.tolist():
        d = exact_distances(rmat, left.vectors(lcol, np.array([lid]))[0], metric)
        if max_distance is not None:
            sel = np.flatnonzero(d <= max_distance)
        else:
            top = TopK(min(k, len(rids)))
            top.push(rids, d)
            sel = np.searchsorted(rids, top.result()[0])
        out_l.append(np.full(len(sel), lid, dtype=np.int64))
        out_r.append(rids[sel])
        out_d.append(d[sel])
    if not out_l:
        e = np.empty(0, dtype=np.int64)
        return e, e, np.empty(0)
    return np.concatenate(out_l), np.concatenate(out_r), np.concatenate(out_d)
