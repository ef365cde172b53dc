"""Which partition: centroids and navigation by exact GEMM (faiss's coarse quantizer role).

Posting id == centroid slot. Ids are never reused while the index is open (a split retires
the old id and adds two new ones; a merge retires one), so a reader holding an older snapshot
can never confuse two partitions. Slots are compacted away on save/load.

Readers take `snapshot()` once per query batch: an immutable `Routing` object (copy-on-write:
writers build a new one and publish it with one attribute assignment).

Navigation is one exact GEMM against all live centroids. At 1M vectors and ~7k partitions that
is ~1M multiply-adds per query (~0.1 ms), under a tenth of the posting scans it feeds, so a
second level (or a graph over centroids, as SPANN uses at billion scale) is not needed until
~100k partitions (~20M vectors); `navigate` is the one place it would go.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unidb.index.partition.kmeans import sq_dists
from unidb.kernels.partition import rng_replicas, select_probes, topk_rows

ASSIGN_CHUNK = 16384   # rows per GEMM when assigning vectors to centroids (bounds memory)


# Two-level navigation for one-query search (SPANN navigates its centroids with a graph/tree;
# a coarse k-means level is the in-memory equivalent). Measured at synth1m (~7k partitions):
# the exact centroid pass cost ~300 us per query, ~90% of a query at recall 0.95.
TWO_LEVEL_MIN = 2048     # live partitions before a coarse level is built (below: exact pass)
GROUP_SIZE = 64          # centroids per coarse group
NAV_GROUPS = 16          # coarse groups whose members are ranked exactly (~1k centroids)
_EMPTY_F = np.zeros((0, 1), np.float32)
_EMPTY_I = np.zeros(1, np.int64)


@dataclass(frozen=True)
class Nav:
    """Coarse level over the centroids: k-means groups, members in CSR form (live slots only)."""
    coarse: np.ndarray        # (G, dim) float32
    coarse_norms: np.ndarray  # (G,) float32
    group_of: np.ndarray      # (slots,) int64 group of every slot (-1: none)
    member_off: np.ndarray    # (G+1,) int64
    members: np.ndarray       # live slot ids grouped by group
    built_live: int           # live partitions when the groups were fitted

    @staticmethod
    def fit(centroids: np.ndarray, alive: np.ndarray, seed: int = 0) -> Nav:
        from unidb.index.partition.kmeans import balanced_kmeans
        live = np.flatnonzero(alive)
        g = max(2, int(np.ceil(len(live) / GROUP_SIZE)))
        coarse, _ = balanced_kmeans(centroids[live], g, np.random.default_rng(seed))
        coarse = np.ascontiguousarray(coarse, dtype=np.float32)
        group_of = np.full(len(alive), -1, dtype=np.int64)
        group_of[live] = np.argmin(sq_dists(centroids[live], coarse), axis=1)
        return Nav._with(coarse, group_of, alive, len(live))

    @staticmethod
    def _with(coarse, group_of, alive, built_live) -> Nav:
        live = np.flatnonzero(alive & (group_of >= 0))
        order = live[np.argsort(group_of[live], kind="stable")]
        off = np.searchsorted(group_of[order], np.arange(len(coarse) + 1)).astype(np.int64)
        return Nav(coarse, np.einsum("ij,ij->i", coarse, coarse).astype(np.float32), group_of,
                   off, order.astype(np.int64), built_live)

    def extended(self, centroids: np.ndarray, alive: np.ndarray) -> Nav:
        """Groups for a routing with more slots / fewer live ones: new slots join their
        nearest group; refit when the live count drifted 2x from the fit."""
        n_live = int(alive.sum())
        if not (self.built_live / 2 <= n_live <= self.built_live * 2):
            return Nav.fit(centroids, alive)
        group_of = np.full(len(alive), -1, dtype=np.int64)
        group_of[:len(self.group_of)] = self.group_of
        new = np.arange(len(self.group_of), len(alive))
        if len(new):
            group_of[new] = np.argmin(sq_dists(centroids[new], self.coarse), axis=1)
        return Nav._with(self.coarse, group_of, alive, self.built_live)


@dataclass(frozen=True)
class Routing:
    centroids: np.ndarray   # (slots, dim) float32; dead slots hold stale values
    cnorms: np.ndarray      # (slots,) float32 squared norms; +inf for dead slots (never nearest)
    alive: np.ndarray       # (slots,) bool
    nav: Nav | None = None  # coarse level for one-query navigation (large indexes only)

    @staticmethod
    def create(centroids: np.ndarray, cnorms: np.ndarray, alive: np.ndarray,
               nav: Nav | None = None) -> Routing:
        """A snapshot with its coarse level kept (extended) or built when large enough."""
        n_live = int(alive.sum())
        if n_live < TWO_LEVEL_MIN:
            nav = None
        elif nav is None:
            nav = Nav.fit(centroids, alive)
        else:
            nav = nav.extended(centroids, alive)
        return Routing(centroids, cnorms, alive, nav)

    def nav_arrays(self):
        """(coarse, coarse_norms, member_off, member_vecs, member_norms, members, groups) for
        the one-query kernel: live centroids copied contiguously in group order, so a query
        reads its candidate groups sequentially (gathering ~1k scattered rows cost 4x more)."""
        return self._cached("_nav_arrays", self._make_nav_arrays)

    def _make_nav_arrays(self):
        n = self.nav
        if n is None:   # no coarse level: one exact pass over the live slots
            c, cn = self.live_centroids
            ids = self.live_ids.astype(np.int64)
            return (_EMPTY_F.reshape(0, self.centroids.shape[1]), np.zeros(0, np.float32),
                    np.array([0, len(ids)], np.int64), c, cn, ids, 0)
        return (n.coarse, n.coarse_norms, n.member_off,
                np.ascontiguousarray(self.centroids[n.members]),
                np.ascontiguousarray(self.cnorms[n.members]), n.members, NAV_GROUPS)

    @property
    def n_slots(self) -> int:
        return len(self.alive)

    @property
    def n_live(self) -> int:
        n = self.__dict__.get("_n_live")
        if n is None:
            n = int(self.alive.sum())
            object.__setattr__(self, "_n_live", n)
        return n

    def _cached(self, key, make):
        v = self.__dict__.get(key)
        if v is None:
            v = make()
            object.__setattr__(self, key, v)
        return v

    @property
    def live_ids(self) -> np.ndarray:
        return self._cached("_live_ids", lambda: np.flatnonzero(self.alive))

    @property
    def live_centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """(centroids, squared norms) of live slots only, in live_ids order: retired slots
        stay in the arrays until save/load renumbers, so dense passes skip them here."""
        return self._cached("_live_c", lambda: (np.ascontiguousarray(self.centroids[self.live_ids]),
                                                np.ascontiguousarray(self.cnorms[self.live_ids])))

    def with_changes(self, retire: list[int], add: np.ndarray) -> tuple[Routing, np.ndarray]:
        """New snapshot with slots `retire` dead and centroids `add` appended; returns new ids."""
        c = np.concatenate([self.centroids, add.astype(np.float32)]) if len(add) else self.centroids.copy()
        addn = np.einsum("ij,ij->i", add, add).astype(np.float32) if len(add) else np.zeros(0, np.float32)
        cn = np.concatenate([self.cnorms, addn])
        alive = np.concatenate([self.alive, np.ones(len(add), dtype=bool)])
        for r in retire:
            alive[r] = False
            cn[r] = np.inf
        new_ids = np.arange(self.n_slots, self.n_slots + len(add))
        return Routing.create(c, cn, alive, self.nav), new_ids

    # ---------------------------------------------------------------- navigation

    def centroid_sq_dists(self, x: np.ndarray) -> np.ndarray:
        """Squared L2 from each row of x to every slot (dead slots +inf)."""
        d = x @ self.centroids.T
        d *= -2.0
        d += self.cnorms[None, :]
        d += np.einsum("ij,ij->i", x, x)[:, None]
        np.maximum(d, 0.0, out=d)
        return d

    def centroid_scores(self, x: np.ndarray, ip: bool) -> np.ndarray:
        """Routing distance of queries to slots: squared L2, or -dot for inner product."""
        if not ip:
            return self.centroid_sq_dists(x)
        d = -(x @ self.centroids.T)
        d[:, ~self.alive] = np.inf
        return d

    def live_scores(self, x: np.ndarray, ip: bool) -> np.ndarray:
        """Like centroid_scores, over live slots only (columns in live_ids order)."""
        c, cn = self.live_centroids
        if ip:
            return -(x @ c.T)
        d = x @ c.T
        d *= -2.0
        d += cn[None, :]
        d += np.einsum("ij,ij->i", x, x)[:, None]
        np.maximum(d, 0.0, out=d)
        return d

    def navigate(self, q: np.ndarray, ip: bool, eps2: float, max_parts: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query, posting) pairs to probe: posting ids and query indices (query-major, each
        query's postings nearest first) and the count per query. The eps2 rule prunes on true
        L2 distances (not for inner product, where ratios of scores mean nothing)."""
        if self.n_live == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(len(q), np.int64)
        d = self.live_scores(q, ip).astype(np.float32, copy=False)
        prune = (not ip) and bool(np.isfinite(eps2))
        posts, qidx, counts = select_probes(d, int(max_parts), float(eps2) if prune else 0.0, prune)
        return self.live_ids[posts], qidx, counts

    def order_all(self, q: np.ndarray, ip: bool) -> tuple[np.ndarray, np.ndarray]:
        """All live posting ids for one query, nearest centroid first, with routing distances."""
        d = self.live_scores(q[None, :], ip)[0]
        o = np.argsort(d, kind="stable")
        return self.live_ids[o], d[o]

    def assign(self, x: np.ndarray, eps1: float, replicas: int,
               exclude: np.ndarray | None = None) -> np.ndarray:
        """Postings for each row of x by the replication rule: (n, replicas) ids, -1 padded.

        Assignment is by L2 for every metric (inner-product indexes cluster by L2 as well).
        `exclude` (slot ids) are treated as dead (used by a merge before publishing).
        """
        n = len(x)
        out = np.full((n, replicas), -1, dtype=np.int64)
        ids = self.live_ids
        c, cn = self.live_centroids
        if exclude is not None and len(exclude):
            keep = ~np.isin(ids, exclude)
            ids, c, cn = ids[keep], c[keep], cn[keep]
        if len(ids) == 0:
            return out
        cands = min(4 * replicas, len(ids))
        for s in range(0, n, ASSIGN_CHUNK):
            xs = x[s:s + ASSIGN_CHUNK]
            d = sq_dists(xs, c, cn).astype(np.float32, copy=False)
            top, td = topk_rows(d, cands)
            td = np.sqrt(td)
            local = rng_replicas(top, td, c, eps1, replicas)
            out[s:s + len(xs)] = np.where(local >= 0, ids[np.maximum(local, 0)], -1)
        return out
