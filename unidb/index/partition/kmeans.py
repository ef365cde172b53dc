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
    dropped (their points join neighbouring postings at assignment time). A cluster k-means
    cannot split at all (duplicates) is a leaf of any size.
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
            if len(child) == n:
                # k-means could not split it (duplicates): one leaf, however long. Cutting by
                # position gave two equal centroids; assignment put every row on the first and
                # LIRE split the posting forever. LIRE keeps it as one unsplittable posting.
                out.append(x[child].mean(axis=0, dtype=np.float64).astype(np.float32)[None, :])
                break
            stack.append(child)
    return np.ascontiguousarray(np.concatenate(out, axis=0), dtype=np.float32)


SPLIT_ITERS = 8        # 2-means on a few hundred points settles in ~5 iterations
# Each side of a split keeps at least this fraction of the rows. A size *penalty* (as above)
# flips whole clusters back and forth on scattered points (a hub posting collecting outliers
# of many distant clusters: distance differences ~10, penalty ~160), which left splits of
# 8 / 2,225 rows and a split-merge loop; a quantile cut on the bisector cannot.
SPLIT_MIN_SIDE = 0.3
# Rows closer than this to one another, relative to the largest squared norm, are one point to
# the partition index: routing computes |x|^2 - 2 x.c + |c|^2 in float32 (~1.2e-7 relative per
# term, a few terms and a dot product of rounding), so two centroids closer than ~64 float32
# ulps cannot be told apart reliably, and a split between them would be undone by the next
# reassignment (rows flip to whichever centroid rounding favours) -- and redone, forever.
ROUTING_RESOLUTION = 64 * float(np.finfo(np.float32).eps)
# A cut is checked for a group of such near-identical rows on both sides at this many sorted
# positions on each side of it (the group of each row there is found by one pass over the posting):
# a group straddling a cut has members next to it, since its rows project within a hair of
# one another.
CUT_PROBE = 4
# A cut moved off one group may land in another; after this many moves the rows are taken as
# unsplittable rather than searched further (never reached in the tests' data).
MAX_CUT_MOVES = 8


def balanced_two_means(x: np.ndarray, rng: np.random.Generator, iters: int = SPLIT_ITERS,
                       min_side: float = SPLIT_MIN_SIDE, min_rows: int = 1
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """Split one posting in two (LIRE split): centroids (2, dim) and a 0/1 assignment, or None
    when the rows cannot be separated.

    Lloyd iterations where every row goes to its nearer centroid unless that leaves a side
    under `min_side` of the rows (or under `min_rows`); then the rows nearest the bisector on
    the big side cross over. Rows keep their nearest centroid whenever the natural split is
    balanced enough. Rows within routing resolution of one another (duplicates) always stay on
    one side: splitting such a group is undone by reassignment (they share their nearest
    centroid) and redone by the next split, without end; a group too big for a balanced cut
    is parted from the rest at its edge if the rest keeps `min_rows`. None when no such cut
    exists, or when all rows lie within routing resolution of one another (zero spread)."""
    n = len(x)
    if n < 2:
        return None
    xd = x.astype(np.float64)
    resolution = ROUTING_RESOLUTION * float(np.einsum("ij,ij->i", xd, xd).max())
    c0 = xd[int(rng.integers(n))]
    d0 = ((xd - c0) ** 2).sum(axis=1)
    if d0.max() <= resolution:               # duplicates / near-duplicates: nothing to cut
        return None
    c1 = xd[int(np.argmax(d0))]              # farthest row from a random one (2-means++ style)
    lo = min(max(1, int(min_side * n), int(min_rows)), n // 2)
    hard = min(max(1, int(min_rows)), n // 2)   # the least a side may keep to part duplicates
    total = xd.sum(axis=0)
    a = None
    for _ in range(iters):
        # s > 0 <=> row nearer to c1: |x-c0|^2 - |x-c1|^2 = 2 x.(c1-c0) + |c0|^2 - |c1|^2
        s = xd @ (2.0 * (c1 - c0)) + (c0 @ c0 - c1 @ c1)
        order = np.argsort(s, kind="stable")
        want = min(max(int(np.count_nonzero(s <= 0)), lo), n - lo)   # rows order[want:] -> c1
        if _cut_is_clear(xd, s, order, want, c1 - c0, resolution):
            cut = want
        else:
            cut = _cut_clear_of_duplicates(xd, order, want, lo, hard, resolution)
        if cut is None:
            return None
        new = np.zeros(n, dtype=bool)
        new[order[cut:]] = True
        if a is not None and np.array_equal(new, a):
            break
        a = new
        ones = n - cut
        s1 = a.astype(np.float64) @ xd            # side sums by one GEMV, not two gathers
        c1 = s1 / ones
        c0 = (total - s1) / (n - ones)
    if ((c1 - c0) ** 2).sum() <= resolution:   # halves routing cannot tell apart
        return None
    return np.stack([c0, c1]).astype(np.float32), a.astype(np.int64)


def _cut_is_clear(xd: np.ndarray, s: np.ndarray, order: np.ndarray, cut: int,
                  direction: np.ndarray, resolution: float) -> bool:
    """Whether no group of rows within `resolution` (squared) of one another straddles sorted
    position `cut` — proved cheaply, the usual case (False: look closer).

    Rows that close project within 2 sqrt(resolution) |direction| of one another on s, so a
    straddling pair has its left row in the last stretch of that width before the cut and its
    right row in the first after it: only pairs across those two short windows are measured
    (twice the width, for rounding in s), not the whole posting."""
    n = len(order)
    if cut <= 0 or cut >= n:
        return True
    reach = 4.0 * np.sqrt(resolution * float(direction @ direction))
    ss = s[order]
    left = order[int(np.searchsorted(ss[:cut], ss[cut] - reach, side="left")):cut]
    right = order[cut:cut + int(np.searchsorted(ss[cut:], ss[cut - 1] + reach, side="right"))]
    if not len(left) or not len(right):
        return True
    a, b = xd[left], xd[right]
    d = np.einsum("ij,ij->i", a, a)[:, None] - 2.0 * (a @ b.T) + np.einsum("ij,ij->i", b, b)
    # the expansion loses ~|x|^2 eps64 absolutely: far below resolution, and a near pair that
    # rounding hid would still be caught by the exact probes below when it matters
    return not bool((d <= 2.0 * resolution).any())


def _cut_clear_of_duplicates(xd: np.ndarray, order: np.ndarray, want: int, lo: int, hard: int,
                             resolution: float) -> int | None:
    """Sorted position `want`, or the nearest position that keeps every group of rows within
    `resolution` (squared) of one another on one side: first with both sides >= lo, else
    >= hard; None if there is none."""
    n = len(order)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    cut = want
    for _ in range(MAX_CUT_MOVES):
        seen = np.zeros(n, dtype=bool)
        moved = False
        for i in range(max(cut - CUT_PROBE, 0), min(cut + CUT_PROBE, n)):
            r = order[i]
            if seen[r]:
                continue
            diff = xd - xd[r]
            group = np.einsum("ij,ij->i", diff, diff) <= resolution
            seen |= group
            pos = rank[group]
            first, end = int(pos.min()), int(pos.max()) + 1
            if not first < cut < end:
                continue
            # the group straddles the cut: move the cut to one of its edges
            edges = [e for e in (first, end) if lo <= e <= n - lo] or \
                    [e for e in (first, end) if hard <= e <= n - hard]
            if not edges:
                return None
            cut = min(edges, key=lambda e: abs(e - want))
            moved = True
            break
        if not moved:
            return cut
    return None
