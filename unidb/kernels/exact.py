"""Exact distance kernels (numpy BLAS), pure functions on arrays.

Search ranks with the fast float32 expansion `|x|^2 - 2 x.q + |q|^2` (one GEMM/GEMV), keeps
every row whose approximate value is within a rounding tolerance of the k-th, and re-scores
those candidates exactly in float64 — so near ties are ordered correctly and reported
distances are exact, while the bulk of the work stays one BLAS call.
"""
from __future__ import annotations

import numpy as np

# Relative width of the near-tie band around the k-th approximate value. float32 GEMM error on
# a dot product is ~sqrt(dim) * 6e-8 relative to |x||q|; 1e-5 covers dim up to ~10^4 with room.
TIE_TOLERANCE = 1e-5

METRIC_L2, METRIC_COSINE, METRIC_IP = "l2", "cosine", "ip"


def sq_norms(x: np.ndarray) -> np.ndarray:
    """Row squared norms in float32 (accumulated in float64 for accuracy)."""
    return np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32)


def approx_scores(x: np.ndarray, aux: np.ndarray | None, q: np.ndarray, metric: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Approximate ranking values (smaller = closer) of rows `x` for queries `q` (nq, d).

    `aux` is the rows' squared norms (l2) or norms (cosine). Returns (values (nq, n), tol (nq,))
    where `tol` is the rounding band within which two values may be misordered.
    """
    dots = q @ x.T if len(x) else np.zeros((len(q), 0), dtype=np.float32)
    qn2 = np.einsum("ij,ij->i", q, q, dtype=np.float64)
    if metric == METRIC_L2:
        vals = aux[None, :] - 2.0 * dots
        vals += qn2.astype(np.float32)[:, None]
        scale = (float(aux.max()) if len(aux) else 0.0) + qn2
    elif metric == METRIC_COSINE:
        qn = np.sqrt(qn2).astype(np.float32)
        vals = -dots / (aux[None, :] * qn[:, None])
        scale = np.ones(len(q))
    elif metric == METRIC_IP:
        vals = -dots
        scale = (float(np.sqrt(aux.max())) if aux is not None and len(aux) else 1.0) * np.sqrt(qn2)
    else:
        raise ValueError(f"unknown metric {metric!r}")
    return vals, TIE_TOLERANCE * np.maximum(scale, 1e-30)


def exact_distances(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """True metric values in float64 for rows `x` against one query `q` (1-D).

    l2: Euclidean distance; cosine: 1 - cos; ip: -dot (negated so smaller is closer).
    """
    x64 = x.astype(np.float64, copy=False)
    q64 = q.astype(np.float64, copy=False)
    if metric == METRIC_L2:
        diff = x64 - q64
        return np.sqrt(np.einsum("ij,ij->i", diff, diff))
    dots = x64 @ q64
    if metric == METRIC_COSINE:
        return 1.0 - dots / (np.linalg.norm(x64, axis=1) * np.linalg.norm(q64))
    if metric == METRIC_IP:
        return -dots
    raise ValueError(f"unknown metric {metric!r}")


def candidates_topk(vals: np.ndarray, tol: float, k: int) -> np.ndarray:
    """Indices of every row that may belong to the top k of `vals` (1-D), near ties included."""
    n = len(vals)
    if n <= k:
        return np.flatnonzero(np.isfinite(vals))    # masked-out rows are +inf
    kth = np.partition(vals, k - 1)[k - 1]
    if not np.isfinite(kth):
        return np.flatnonzero(np.isfinite(vals))
    return np.flatnonzero(vals <= kth + tol)


def candidates_range(vals: np.ndarray, tol: float, hi_approx: float) -> np.ndarray:
    """Indices whose approximate value may be within an upper bound."""
    return np.flatnonzero(vals <= hi_approx + tol)


def order_by_distance(dist: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
    """Stable order by (distance, row id): deterministic tie-breaking."""
    return np.lexsort((row_ids, dist))


def to_approx_bound(distance: float, metric: str) -> float:
    """Map a true distance bound into the approximate ranking space of `approx_scores`."""
    if metric == METRIC_L2:
        return float(distance) ** 2 if distance >= 0 else -np.inf
    if metric == METRIC_COSINE:
        return float(distance) - 1.0
    return float(distance)
