"""Which partition: centroids and navigation by exact GEMM (faiss's coarse quantizer role).

Posting id == centroid slot. Ids are never reused while the index is open (a split retires
the old id and adds two new ones; a merge retires one), so a reader holding an older snapshot
can never confuse two partitions. Slots are compacted away on save/load.

Readers take `snapshot()` once per query batch: an immutable `Routing` object (copy-on-write:
writers build a new one and publish it with one attribute assignment).

Batched navigation is one exact GEMM against all live centroids (`navigate`). One query ranks
8-bit codes of the centroids and re-scores exactly the few the code error cannot rule out
(`NavCodes`, `nav_arrays`, kernels.partition.nearest_slots): the same answer as an exact pass
at a quarter of the memory traffic. A graph over the centroids (SPANN) would only pay off at
~100k+ partitions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unidb.index.partition.kmeans import sq_dists
from unidb.kernels.partition import rng_replicas, select_probes, topk_within

ASSIGN_CHUNK = 16384   # rows per GEMM when assigning vectors to centroids (bounds memory)


# One-query navigation ranks every live centroid, like faiss IVF's coarse quantizer, but
# over 8-bit codes of the centroids (a quarter of the bytes), then re-scores exactly the few
# centroids the code error cannot rule out (kernels.partition.nearest_slots): the same answer
# as an exact float32 pass. The exact pass is memory bound: at synth1m 4.6k float32 centroids
# (2.4 MB) stream from L3 at ~13 ns each, ~60 us per query; the codes (600 kB, L2 resident)
# take ~7 ns each, ~35-40 us with the candidates' exact re-score. (A coarse
# k-means level over the centroids was used before; on synth1m its groups came out 1 to 2,326
# centroids -- a group whose mean sits near the data mean is near every query -- so the 16
# nearest groups held 84% of all centroids and navigation cost ~50 us.)
NAV_REFIT = 2.0   # refit the code range once the live count drifts this factor from the fit


@dataclass(frozen=True)
class NavCodes:
    """Per-dimension 8-bit scalar quantization of the centroids, slot indexed: centroid c is
    reconstructed as lo + step * code, and |c - reconstruction| <= err (rounded up)."""
    lo: np.ndarray        # (dim,) float32
    step: np.ndarray      # (dim,) float32
    codes: np.ndarray     # (slots, dim) uint8
    norms: np.ndarray     # (slots,) float32 squared norms of the reconstructions
    err: np.ndarray       # (slots,) float32 bound on the reconstruction error
    built_live: int       # live centroids when lo/step were fitted

    @staticmethod
    def fit(centroids: np.ndarray, alive: np.ndarray) -> NavCodes:
        live = np.flatnonzero(alive)
        dim = centroids.shape[1]
        if len(live):
            c = centroids[live].astype(np.float64)
            lo, hi = c.min(axis=0), c.max(axis=0)
        else:
            lo, hi = np.zeros(dim), np.ones(dim)
        step = (hi - lo) / 255.0
        step[~(step > 0)] = 1.0
        empty = NavCodes(lo.astype(np.float32), step.astype(np.float32),
                         np.zeros((0, dim), np.uint8), np.zeros(0, np.float32),
                         np.zeros(0, np.float32), len(live))
        return empty._append(centroids)

    def extended(self, centroids: np.ndarray, alive: np.ndarray) -> NavCodes:
        """Codes for a routing with more slots (appended) or fewer live ones; refit the
        range when the live count drifted NAV_REFIT x from the fit (centroids outside the
        range are clipped: still exact, only their error bound grows)."""
        n_live = int(alive.sum())
        if not (self.built_live / NAV_REFIT <= n_live <= self.built_live * NAV_REFIT):
            return NavCodes.fit(centroids, alive)
        return self._append(centroids)

    def _append(self, centroids: np.ndarray) -> NavCodes:
        new = centroids[len(self.codes):]
        if len(new) == 0:
            return self
        x = new.astype(np.float64)
        lo, step = self.lo.astype(np.float64), self.step.astype(np.float64)
        code = np.clip(np.rint((x - lo) / step), 0, 255)
        rec = lo + step * code
        norms = np.einsum("ij,ij->i", rec, rec).astype(np.float32)
        err = np.sqrt(np.einsum("ij,ij->i", x - rec, x - rec))
        err = (err * (1 + 1e-6) + 1e-7).astype(np.float32)
        return NavCodes(self.lo, self.step, np.concatenate([self.codes, code.astype(np.uint8)]),
                        np.concatenate([self.norms, norms]), np.concatenate([self.err, err]),
                        self.built_live)


@dataclass(frozen=True)
class Routing:
    centroids: np.ndarray   # (slots, dim) float32; dead slots hold stale values
    cnorms: np.ndarray      # (slots,) float32 squared norms; +inf for dead slots (never nearest)
    alive: np.ndarray       # (slots,) bool
    nav: NavCodes | None = None  # centroid codes for one-query navigation

    @staticmethod
    def create(centroids: np.ndarray, cnorms: np.ndarray, alive: np.ndarray,
               nav: NavCodes | None = None) -> Routing:
        """A snapshot with its navigation codes kept (extended) or fitted."""
        nav = NavCodes.fit(centroids, alive) if nav is None else nav.extended(centroids, alive)
        return Routing(centroids, cnorms, alive, nav)

    def nav_arrays(self):
        """(lo, step, codes, code_norms, code_err, bounds, slots, centroids, cnorms) for the
        one-query kernel: the codes of the live slots copied contiguously (slots[r] is the
        slot of codes[r]), bounds = [max code_err, max code_norms] (float64), the float32
        centroids slot indexed for the exact re-score."""
        return self._cached("_nav_arrays", self._make_nav_arrays)

    def _make_nav_arrays(self):
        n = self.nav if self.nav is not None else NavCodes.fit(self.centroids, self.alive)
        ids = self.live_ids.astype(np.int64)
        err = np.ascontiguousarray(n.err[ids])
        norms = np.ascontiguousarray(n.norms[ids])
        bounds = np.array([err.max() if len(ids) else 0.0, norms.max() if len(ids) else 0.0],
                          dtype=np.float64)
        return (n.lo, n.step, np.ascontiguousarray(n.codes[ids]), norms, err, bounds, ids,
                self.centroids, self.cnorms)

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
        """New snapshot with slots `retire` dead and centroids `add` appended; returns new ids.

        Centroid rows are never modified once written, so snapshots share one append-only
        buffer (doubling capacity): a split or merge appends its 1-2 rows instead of copying
        every centroid (a 1.5 MB copy per job at ~3,000 slots: 6% of rebalancing on the drift
        benchmark). Only the newest snapshot may append; an older one copies."""
        n, k = self.n_slots, len(add)
        holder = self.__dict__.get("_cbuf")
        if k == 0:
            c = self.centroids
        else:
            if holder is None or holder[1] != n or len(holder[0]) < n + k:
                buf = np.empty((max(2 * (n + k), 64), self.centroids.shape[1]), np.float32)
                buf[:n] = self.centroids
                holder = [buf, n]
            holder[0][n:n + k] = add
            holder[1] = n + k
            c = holder[0][:n + k]
        addn = np.einsum("ij,ij->i", add, add).astype(np.float32) if len(add) else np.zeros(0, np.float32)
        cn = np.concatenate([self.cnorms, addn])
        alive = np.concatenate([self.alive, np.ones(len(add), dtype=bool)])
        for r in retire:
            alive[r] = False
            cn[r] = np.inf
        new_ids = np.arange(n, n + k)
        out = Routing.create(c, cn, alive, self.nav)
        if holder is not None:
            object.__setattr__(out, "_cbuf", holder)
        return out, new_ids

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
               exclude: np.ndarray | None = None, among: np.ndarray | None = None) -> np.ndarray:
        """Postings for each row of x by the replication rule: (n, replicas) ids, -1 padded.

        Assignment is by L2 for every metric (inner-product indexes cluster by L2 as well).
        `exclude` (slot ids) are treated as dead (used by a merge before publishing); `among`
        (live slot ids) restricts the choice to those slots (LIRE's local reassignment).
        """
        n = len(x)
        out = np.full((n, replicas), -1, dtype=np.int64)
        ids = self.live_ids
        c, cn = self.live_centroids
        if among is not None:
            ids = np.unique(np.asarray(among, dtype=np.int64))
            ids = ids[self.alive[ids]]
            c, cn = self.centroids[ids], self.cnorms[ids]
        if exclude is not None and len(exclude):
            keep = ~np.isin(ids, exclude)
            ids, c, cn = ids[keep], c[keep], cn[keep]
        if len(ids) == 0:
            return out
        cands = min(4 * replicas, len(ids))
        for s in range(0, n, ASSIGN_CHUNK):
            xs = x[s:s + ASSIGN_CHUNK]
            d = sq_dists(xs, c, cn).astype(np.float32, copy=False)
            # squared-distance bound of the eps1 rule, widened a hair so rounding never drops
            # a centroid rng_replicas (which decides on true distances) would keep
            top, td = topk_within(d, d.min(axis=1), cands,
                                  (1.0 + eps1) ** 2 * (1.0 + 1e-5) + 1e-12)
            td = np.sqrt(td)
            local = rng_replicas(top, td, c, eps1, replicas)
            out[s:s + len(xs)] = np.where(local >= 0, ids[np.maximum(local, 0)], -1)
        return out
