"""Quality metrics for benchmarks and tests: recall@k, under-filled results, nDCG@k, exact k-NN.

Pure functions on arrays and dicts; nothing here touches files. Conventions (BENCHMARKS.md):
recall@k = |returned[:k] ∩ exact[:k]| / k, a result shorter than k counts its missing rows as
misses, and id -1 is padding. Exact answers come from `exact_knn` (float32 shortlist,
float64 re-score, ties broken by the smaller id).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

PAD_ID = -1                # id that pads a result or ground-truth row shorter than k
METRICS = ("l2", "cosine", "ip")
# Queries per chunk in recall_at_k: bounds the (chunk, k, k) comparison cube to ~10 MB at k=100.
_RECALL_QUERY_CHUNK = 1024
# exact_knn working set: a (query block x base block) float32 score matrix, 32 MB.
_KNN_BASE_BLOCK = 16_384
_KNN_QUERY_BLOCK = 512
# Extra shortlist slots kept per query beyond k before the float64 re-score; a query whose
# shortlist cannot be proven complete is recomputed exactly, so this only trades speed.
_KNN_MIN_MARGIN = 32
# float32 unit roundoff; the GEMM error bound is a small multiple of d * u * |q| * |x|.
_F32_UNIT_ROUNDOFF = 2.0 ** -24
_BOUND_SAFETY = 4.0


# ---------------------------------------------------------------------------------- recall


def _as_padded_ids(found_ids: Any, k: int) -> np.ndarray:
    """Results (2-D array, or ragged list of lists) as an int64 (nq, k) array padded with -1."""
    if isinstance(found_ids, np.ndarray) and found_ids.ndim == 2:
        arr = np.asarray(found_ids[:, :k], dtype=np.int64)
        if arr.shape[1] < k:
            arr = np.hstack([arr, np.full((arr.shape[0], k - arr.shape[1]), PAD_ID, np.int64)])
        return arr
    rows = list(found_ids)
    out = np.full((len(rows), k), PAD_ID, dtype=np.int64)
    for i, row in enumerate(rows):
        if row is None:
            continue
        vals = np.asarray(row, dtype=np.int64).reshape(-1)[:k]
        out[i, : len(vals)] = vals
    return out


def recall_at_k(found_ids: Any, true_ids: Any, k: int) -> float:
    """Mean over queries of |found[:k] ∩ true[:k]| / k; short or -1-padded results are misses.

    A ground-truth row padded with -1 (fewer than k matches exist) is scored against the ids it
    has; a query with no true ids at all scores 1.0. Duplicate found ids count once.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    true = np.asarray(true_ids)
    if true.ndim != 2 or true.shape[1] < k:
        raise ValueError(f"true_ids must be a 2-D array with at least k={k} columns, "
                         f"got shape {true.shape}")
    true = true[:, :k].astype(np.int64, copy=False)
    found = _as_padded_ids(found_ids, k)
    if found.shape[0] != true.shape[0]:
        raise ValueError(f"found_ids has {found.shape[0]} result lists but true_ids has "
                         f"{true.shape[0]} queries; pass one result list per query")
    if true.shape[0] == 0:
        raise ValueError("recall_at_k needs at least one query")
    total = 0.0
    for start in range(0, true.shape[0], _RECALL_QUERY_CHUNK):
        f = found[start:start + _RECALL_QUERY_CHUNK]
        t = true[start:start + _RECALL_QUERY_CHUNK]
        t_valid = t != PAD_ID
        # A true id is hit when any found id equals it: set semantics, duplicates count once.
        hit = (f[:, :, None] == t[:, None, :]).any(axis=1) & t_valid
        n_true = t_valid.sum(axis=1)
        per_query = np.where(n_true > 0, hit.sum(axis=1) / np.maximum(n_true, 1), 1.0)
        total += float(per_query.sum())
    return total / true.shape[0]


def underfilled(found_ids: Any, k: int, expected_counts: Any = None) -> int:
    """Number of result lists holding fewer than min(k, expected) real (non -1) ids.

    `expected_counts` is how many rows could match each query (an int for all, or one per
    query); None means k.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if isinstance(found_ids, np.ndarray) and found_ids.ndim == 2:
        counts = (np.asarray(found_ids) != PAD_ID).sum(axis=1)
    else:
        counts = np.array([0 if row is None else int((np.asarray(row).reshape(-1) != PAD_ID).sum())
                           for row in found_ids], dtype=np.int64)
    if expected_counts is None:
        need = np.full(len(counts), k, dtype=np.int64)
    else:
        need = np.minimum(np.broadcast_to(np.asarray(expected_counts, dtype=np.int64),
                                          counts.shape), k)
    return int((counts < need).sum())


# ------------------------------------------------------------------------------------ nDCG


def _ranked_docs(result: Mapping[Any, float] | Sequence[Any]) -> list[str]:
    """Doc ids in rank order; a {doc: score} mapping is ranked as trec_eval does it
    (score descending, ties by doc id descending)."""
    if isinstance(result, Mapping):
        items = sorted(((str(d), float(s)) for d, s in result.items()),
                       key=lambda ds: (ds[1], ds[0]), reverse=True)
        return [d for d, _ in items]
    seen: set[str] = set()
    ranked = []
    for d in result:
        d = str(d)
        if d not in seen:           # a repeated doc is counted at its first rank only
            seen.add(d)
            ranked.append(d)
    return ranked


def ndcg_at_k(run: Mapping[Any, Mapping[Any, float] | Sequence[Any]],
              qrels: Mapping[Any, Mapping[Any, int]], k: int = 10) -> float:
    """trec_eval/BEIR nDCG@k averaged over the queries in `qrels`.

    Gain = relevance, discount = log2(rank + 1) with rank from 1, ideal DCG from the query's
    judgements. Qrels queries missing from `run` (or with no relevant doc) score 0; run queries
    absent from `qrels` are ignored. Query and doc ids are compared as strings.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not qrels:
        raise ValueError("qrels is empty: nDCG is averaged over judged queries")
    run_by_qid = {str(q): r for q, r in run.items()}
    total = 0.0
    for qid, judged in qrels.items():
        rels = {str(d): int(r) for d, r in judged.items()}
        ideal_gains = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal_gains, start=1))
        result = run_by_qid.get(str(qid))
        if idcg == 0.0 or result is None:
            continue
        dcg = sum(max(rels.get(d, 0), 0) / math.log2(rank + 1)
                  for rank, d in enumerate(_ranked_docs(result)[:k], start=1))
        total += dcg / idcg
    return total / len(qrels)


# ------------------------------------------------------------------------------ exact k-NN


def _as_compared(x: np.ndarray, metric: str) -> np.ndarray:
    """A float64 copy of the vectors in the form the metric compares (unit length for cosine)."""
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return x


def _exact_scores(q64: np.ndarray, x64: np.ndarray, metric: str) -> np.ndarray:
    """Float64 scores, smaller = closer: squared L2, 1 - cos, or -dot. q (m, d), x (m, c, d)."""
    if metric == "l2":
        diff = x64 - q64[:, None, :]
        return np.einsum("mcd,mcd->mc", diff, diff)
    dots = np.einsum("mcd,md->mc", x64, q64)
    return 1.0 - dots if metric == "cosine" else -dots


def _final_distances(scores: np.ndarray, metric: str) -> np.ndarray:
    """Scores as reported distances: Euclidean for l2, 1 - cos for cosine, the dot for ip."""
    if metric == "l2":
        return np.sqrt(np.maximum(scores, 0.0))
    return -scores if metric == "ip" else scores


def _sort_by_score_then_id(ids: np.ndarray, scores: np.ndarray, k: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best (smallest score, then smallest id) of (ids, scores)."""
    order = np.lexsort((ids, scores), axis=-1)[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2", *,
              query_block: int = _KNN_QUERY_BLOCK, base_block: int = _KNN_BASE_BLOCK
              ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of every query over `base`: ids int64 (nq, k), distances float64 (nq, k).

    Distances are true metric values (Euclidean for "l2", 1 - cos for "cosine", the dot product
    for "ip", largest first); ties go to the smaller id; rows pad with -1 / inf when k > n.
    Queries and base rows are processed in blocks of `query_block` / `base_block` rows
    (memory per step; the answer does not depend on them).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    base = np.asarray(base)
    queries = np.asarray(queries)
    if base.ndim != 2 or queries.ndim != 2 or base.shape[1] != queries.shape[1]:
        raise ValueError(f"base {base.shape} and queries {queries.shape} must be 2-D with the "
                         "same dimension")
    n, d = base.shape
    nq = queries.shape[0]
    k_eff = min(k, n)
    ids = np.full((nq, k), PAD_ID, dtype=np.int64)
    pad = -np.inf if metric == "ip" else np.inf
    dists = np.full((nq, k), pad, dtype=np.float64)
    if n == 0 or nq == 0:
        return ids, dists
    short = min(n, k_eff + max(_KNN_MIN_MARGIN, k_eff // 2))
    for q0 in range(0, nq, query_block):
        q_ids, q_scores = _exact_knn_block(base, queries[q0:q0 + query_block],
                                           k_eff, short, metric, base_block)
        ids[q0:q0 + len(q_ids), :k_eff] = q_ids
        dists[q0:q0 + len(q_ids), :k_eff] = _final_distances(q_scores, metric)
    return ids, dists


def _exact_knn_block(base: np.ndarray, queries: np.ndarray, k: int, short: int, metric: str,
                     base_block: int) -> tuple[np.ndarray, np.ndarray]:
    """exact_knn for one block of queries: float32 shortlist of `short`, float64 re-score."""
    n, d = base.shape
    q64 = _as_compared(queries, metric)
    q32 = q64.astype(np.float32)
    m = q32.shape[0]
    cand_ids = np.empty((m, 0), dtype=np.int64)
    cand_sc = np.empty((m, 0), dtype=np.float32)
    max_norm = 0.0
    for b0 in range(0, n, base_block):
        x64 = _as_compared(base[b0:b0 + base_block], metric)
        norms2 = np.einsum("ij,ij->i", x64, x64)
        max_norm = max(max_norm, float(np.sqrt(norms2.max())))
        x32 = x64.astype(np.float32)
        dots = q32 @ x32.T
        if metric == "l2":
            sc = norms2.astype(np.float32)[None, :] - 2.0 * dots   # |q|^2 added in float64 later
        else:
            sc = -dots
        if cand_sc.shape[1] == short:
            cand_ids, cand_sc = _merge_below_worst(cand_ids, cand_sc, sc, b0)
            continue
        blk_ids = np.broadcast_to(np.arange(b0, b0 + sc.shape[1], dtype=np.int64), sc.shape)
        cand_ids = np.hstack([cand_ids, blk_ids])
        cand_sc = np.hstack([cand_sc, sc])
        if cand_sc.shape[1] > short:
            part = np.argpartition(cand_sc, short - 1, axis=1)[:, :short]
            cand_ids = np.take_along_axis(cand_ids, part, 1)
            cand_sc = np.take_along_axis(cand_sc, part, 1)

    x_short = _as_compared(base[cand_ids.reshape(-1)], metric)
    exact = _exact_scores(q64, x_short.reshape(m, -1, d), metric)
    top_ids, top_sc = _sort_by_score_then_id(cand_ids, exact, k)
    if cand_ids.shape[1] < n:
        # Proof of completeness: every row left out scored >= the shortlist's worst float32
        # score, so its exact score is >= that minus the GEMM error bound. If the k-th exact
        # score is strictly below that, nothing left out can enter (or tie into) the top k.
        qn = np.linalg.norm(q64, axis=1)
        scale = (max_norm ** 2 + 2.0 * qn * max_norm) if metric == "l2" else qn * max_norm
        tol = _BOUND_SAFETY * (d + 4) * _F32_UNIT_ROUNDOFF * scale
        worst = cand_sc.max(axis=1).astype(np.float64)
        # Float32 scores drop the per-query constant of the exact ones (|q|^2, or 1 for cosine).
        offset = {"l2": qn ** 2, "cosine": 1.0, "ip": 0.0}[metric]
        kth = top_sc[:, -1] - offset
        for i in np.flatnonzero(~(kth < worst - tol)):
            top_ids[i], top_sc[i] = _exact_knn_full_scan(base, q64[i], k, metric, base_block)
    return top_ids, top_sc


def _merge_below_worst(cand_ids: np.ndarray, cand_sc: np.ndarray, sc: np.ndarray, b0: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Merge a block's scores into full shortlists, looking only at scores below each row's
    current worst (after the first blocks almost none are), so the cost is one comparison."""
    m, short = cand_sc.shape
    rows, cols = np.nonzero(sc < cand_sc.max(axis=1)[:, None])
    if rows.size == 0:
        return cand_ids, cand_sc
    all_rows = np.concatenate([np.repeat(np.arange(m), short), rows])
    all_sc = np.concatenate([cand_sc.ravel(), sc[rows, cols]])
    all_ids = np.concatenate([cand_ids.ravel(), cols.astype(np.int64) + b0])
    order = np.lexsort((all_sc, all_rows))          # by row, then score
    counts = short + np.bincount(rows, minlength=m)
    rank = np.arange(order.size) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = order[rank < short]                      # each row's best `short`, row-major
    return all_ids[keep].reshape(m, short), all_sc[keep].reshape(m, short)


def _exact_knn_full_scan(base: np.ndarray, q64: np.ndarray, k: int, metric: str,
                         base_block: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 scan of the whole base for one query (fallback when the shortlist is unproven)."""
    n, d = base.shape
    scores = np.empty(n, dtype=np.float64)
    for b0 in range(0, n, base_block):
        x64 = _as_compared(base[b0:b0 + base_block], metric)
        scores[b0:b0 + len(x64)] = _exact_scores(q64[None, :], x64[None], metric)[0]
    ids, sc = _sort_by_score_then_id(np.arange(n, dtype=np.int64)[None, :], scores[None, :], k)
    return ids[0], sc[0]


def ids_from_lists(results: Iterable[Iterable[int]], k: int) -> np.ndarray:
    """Ragged result lists as an int64 (nq, k) array padded with -1 (for storage or plots)."""
    return _as_padded_ids(list(results), k)
