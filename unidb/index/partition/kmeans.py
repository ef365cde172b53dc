"""Balanced hierarchical k-means (SPANN's partitioning, ALGORITHMS.md §2).

Assignment cost = squared distance + lambda * cluster size, so no cluster swallows a dense
region: posting lengths stay even, which bounds the cost of the slowest probe. The hierarchy
(split into at most BRANCH clusters, recurse until a cluster holds <= target points) keeps
every k-means run small: the full 1M x 128 build is a few GEMMs per level, not one 1M x 8k.
Deterministic for a seed (one numpy Generator drives every random choice, in a fixed order).
"""
from __future__ import annotations

import numpy as np

BRANCH = 32            # clusters per k-means run; 32 keeps the n x k GEMM cheap, depth ~log32(n/T)
ITERS = 12             # Lloyd iterations per run; balanced assignments settle in ~10 on SIFT/MNIST
BALANCE_LAMBDA = 1.0   # size penalty: a cluster 2x the mean size costs one mean sq. distance more
LEAF_SLACK = 1.5       # a cluster of <= 1.5 x target points is a leaf (bounds initial posting length)
MIN_LEAF = 0.2         # leaves under 0.2 x target points are dropped (tiny postings waste probes)
SAMPLE_PER_CLUSTER = 256  # k-means is fitted on at most this many points per cluster, then all assigned


def sq_dists(x: np.ndarray, c: np.ndarray, cn: np.ndarray | None = None) -> np.ndarray:
    """Squared L2 distances (n, k) by GEMM: |x|^2 - 2 x.c + |c|^2, clipped at 0."""
    if cn is None:
        cn = np.einsum("ij,ij->i", c, c)
    xn = np.einsum("ij,ij->i", x, x)
    d = x @ c.T
    d *= -2.0
    d += xn[:, None]
    d += cn[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def balanced_kmeans(x: np.ndarray, k: int, rng: np.random.Generator,
                    iters: int = ITERS, lam: float = BALANCE_LAMBDA) -> tuple[np.ndarray, np.ndarray]:
    """k centroids of x (float32) and the balanced assignment of every row of x."""
    n = len(x)
    if k <= 1 or n <= k:
        if n <= k:
            return x.copy(), np.arange(n)
        return x.mean(axis=0, keepdims=True).astype(np.float32), np.zeros(n, dtype=np.int64)
    fit = x
    if n > SAMPLE_PER_CLUSTER * k:
        fit = x[np.sort(rng.choice(n, SAMPLE_PER_CLUSTER * k, replace=False))]
    m = len(fit)
    c = fit[np.sort(rng.choice(m, k, replace=False))].astype(np.float32, copy=True)
    counts = np.full(k, m / k)
    for _ in range(iters):
        d = sq_dists(fit, c)
        mean_d = float(np.mean(np.min(d, axis=1))) + 1e-12
        penalty = lam * mean_d * (counts / (m / k))
        a = np.argmin(d + penalty[None, :], axis=1)
        counts = np.bincount(a, minlength=k).astype(np.float64)
        onehot = np.zeros((k, m), dtype=np.float32)   # cluster sums as one GEMM (np.add.at is ~50x slower)
        onehot[a, np.arange(m)] = 1.0
        sums = (onehot @ fit).astype(np.float64)
        empty = counts == 0
        c = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if empty.any():   # re-seed empty clusters on random points, deterministically
            c[empty] = fit[rng.choice(m, int(empty.sum()), replace=False)]
    # final balanced assignment of all points, penalty from the fitted sizes scaled to n
    assign = np.empty(n, dtype=np.int64)
    cn = np.einsum("ij,ij->i", c, c)
    d0 = sq_dists(fit, c, cn)
    mean_d = float(np.mean(np.min(d0, axis=1))) + 1e-12
    penalty = lam * mean_d * (counts / (m / k))
    for s in range(0, n, 65536):
        d = sq_dists(x[s:s + 65536], c, cn)
        assign[s:s + 65536] = np.argmin(d + penalty[None, :], axis=1)
    return c, assign


def hierarchical_centroids(x: np.ndarray, target: int, seed: int) -> np.ndarray:
    """Leaf centroids of a balanced hierarchical k-means with clusters of about `target` points.

    A cluster becomes a leaf once it holds <= LEAF_SLACK * target points (else it is split
    again), so no posting starts longer than that; leaves under MIN_LEAF * target points are
    dropped (their points join neighbouring postings at assignment time).
    """
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    stack = [np.arange(len(x))]
    while stack:
        idx = stack.pop()
        n = len(idx)
        if n <= LEAF_SLACK * target:
            if n >= MIN_LEAF * target or (not out and not stack):
                out.append(x[idx].mean(axis=0, dtype=np.float64).astype(np.float32)[None, :])
            continue
        k = int(min(BRANCH, max(2, np.ceil(n / target))))
        c, a = balanced_kmeans(x[idx], k, rng)
        order = np.argsort(a, kind="stable")
        bounds = np.searchsorted(a[order], np.arange(len(c) + 1))
        for j in range(len(c) - 1, -1, -1):
            child = idx[order[bounds[j]:bounds[j + 1]]]
            if len(child) == n:    # k-means could not split (duplicates): cut by position
                half = n // 2
                stack.extend([child[:half], child[half:]])
                break
            stack.append(child)
    return np.ascontiguousarray(np.concatenate(out, axis=0), dtype=np.float32)


SPLIT_ITERS = 8        # 2-means on a few hundred points settles in ~5 iterations
# Each side of a split keeps at least this fraction of the rows. A size *penalty* (as above)
# flips whole clusters back and forth on scattered points (a hub posting collecting outliers
# of many distant clusters: distance differences ~10, penalty ~160), which left splits of
# 8 / 2,225 rows and a split-merge loop; a quantile cut on the bisector cannot.
SPLIT_MIN_SIDE = 0.3


def balanced_two_means(x: np.ndarray, rng: np.random.Generator, iters: int = SPLIT_ITERS,
                       min_side: float = SPLIT_MIN_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Split one posting in two (LIRE split): centroids (2, dim) and a 0/1 assignment.

    Lloyd iterations where every row goes to its nearer centroid unless that leaves a side
    under `min_side` of the rows; then the rows nearest the bisector on the big side cross
    over. Rows keep their nearest centroid whenever the natural split is balanced enough."""
    n = len(x)
    if n < 2:
        return x.astype(np.float32).copy(), np.zeros(n, dtype=np.int64)
    xd = x.astype(np.float64)
    c0 = xd[int(rng.integers(n))]
    d0 = ((xd - c0) ** 2).sum(axis=1)
    c1 = xd[int(np.argmax(d0))]              # farthest row from a random one (2-means++ style)
    lo = max(1, int(min_side * n))
    total = xd.sum(axis=0)
    a = None
    for _ in range(iters):
        # s > 0 <=> row nearer to c1: |x-c0|^2 - |x-c1|^2 = 2 x.(c1-c0) + |c0|^2 - |c1|^2
        s = xd @ (2.0 * (c1 - c0)) + (c0 @ c0 - c1 @ c1)
        new = s > 0
        ones = int(np.count_nonzero(new))
        if ones < lo or ones > n - lo:
            ones = lo if ones < lo else n - lo
            new = np.zeros(n, dtype=bool)
            new[np.argpartition(-s, ones - 1)[:ones]] = True
        if a is not None and np.array_equal(new, a):
            break
        a = new
        s1 = a.astype(np.float64) @ xd            # side sums by one GEMV, not two gathers
        c1 = s1 / ones
        c0 = (total - s1) / (n - ones)
    return np.stack([c0, c1]).astype(np.float32), a.astype(np.int64)
