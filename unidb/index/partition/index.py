"""PartitionIndex: SPANN partitions over row ids, kept fresh in place by LIRE.

Read top to bottom: validation and metric handling, build, add/delete (LIRE insert and
tombstones), search (batched: one GEMM against the centroids, then every probed posting
scanned once for all its queries), the widening path for filters and under-filled results,
scan, stats, persistence. Routing lives in routing.py, posting storage in postings.py, the
rebalancer in lire.py, the on-disk snapshot in persist.py.

Concurrency: one mutex serialises writers (add, delete, one rebalance job at a time); readers
never lock. Writers work on `self._routing` / `self._vmap` / the store's arena and, when an
operation is complete, `_publish()` one immutable `View` (routing, a copy of the version map,
arena). A reader takes `self._view` once and sees a consistent snapshot for as long as it
likes: arena entries are never overwritten and retired postings' slices stay readable, so every
row live in the view is found under the view's versions even while splits move rows (a reader
holding an old routing with the live version map missed rows reassigned into new postings).
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unidb.index.partition import lire
from unidb.index.partition import versions as V
from unidb.index.partition.kmeans import hierarchical_centroids
from unidb.index.partition.options import PartitionOptions
from unidb.index.partition.postings import Arena, PostingStore, make_store
from unidb.index.partition.routing import Routing
from unidb.kernels import partition as K

METRICS = ("l2", "cosine", "ip")
# Extra candidates kept by the float32 scan beyond k, re-scored exactly in float64: covers the
# rounding of |x|^2 - 2x.q + |q|^2 (relative error ~1e-6) so near ties come out in exact order.
RERANK_MARGIN = 8
# Queries per navigation GEMM chunk: bounds the (queries x centroids) matrix to ~64 MB at 16k parts.
QUERY_CHUNK = 1024
# An under-filled query (or a filtered one) widens its probe by this factor per round.
WIDEN_FACTOR = 2
# Bound on the float32 rounding of a scan score |x|^2 - 2 x.q + |q|^2 (or -x.q): a dot
# product of dim terms rounds by at most ~dim ulps of |x||q|, and the sum adds a few more, so
# |error| <= (dim + SCAN_ERR_ULPS) * eps32 * (|x| + |q|)^2. When the heap's worst kept score
# minus this bound does not clear the exact k-th distance, a row the float32 scan dropped may
# be nearer (near-duplicates: 900 vectors within 1e-3 of one another, norm ~7, whose scores
# differ by less than their rounding; the scan kept 9 of them at random and missed the query's
# own row), and the query is answered by an exact float64 pass over the same partitions.
SCAN_ERR_ULPS = 4
EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class View:
    """What readers see: one consistent snapshot, replaced as a whole by writers."""
    routing: Routing
    vmap: np.ndarray
    arena: Arena
    live: int


class PartitionIndex:
    """Dense vector index over int64 row ids (see docs/partition-index.md)."""

    # ------------------------------------------------------------------ construction
    def __init__(self, dim: int, metric: str, options: PartitionOptions, folder=None):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.metric = metric
        self.options = options.validate().resolved(0)
        self.folder = None if folder is None else Path(folder)
        self._mode = K.MODE_IP if metric == "ip" else K.MODE_L2
        self._store: PostingStore = make_store(options.storage, self.dim, folder)
        self._routing = Routing(np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32),
                                np.zeros(0, bool))
        self._vmap = V.new_map(0)
        self._primary = np.full(0, -1, dtype=np.int64)   # row id -> posting of its primary copy
        self._plive = np.zeros(0, dtype=np.int64)        # posting -> live primaries (merge trigger)
        # posting -> max distance of any entry ever appended to its centroid: a split's new
        # centroid can only attract rows of postings it is within 2 x radius of (lire.py)
        self._radius = np.zeros(0, dtype=np.float64)
        # posting -> entries it may hold before another split attempt, for postings LIRE found
        # unsplittable (duplicates, lire._keep_unsplittable); in memory only: after a load
        # each such posting is tried once more, then marked again
        self._unsplittable: dict[int, int] = {}
        self._live = 0
        self._mutex = threading.RLock()
        self.counters = {"splits": 0, "merges": 0, "compactions": 0, "reassign_evaluated": 0,
                         "vectors_moved": 0, "rebalance_cpu_s": 0.0, "arena_compactions": 0,
                         "unsplittable": 0}
        self._rebalancer = lire.Rebalancer(self)
        self._publish()

    def _publish(self) -> None:
        """Make the writer's state visible to readers as one consistent snapshot.

        The slice table (`packed`: offset and length of every posting) is copied too: writers
        update it in place (a split retires p and creates p1/p2), and a reader still routing
        with the old centroids must find p's rows where its view says they are. Row data
        needs no copy: published slices are never overwritten (appends go past their length,
        moves and compactions write elsewhere)."""
        arena = self._store.arena
        self._view = View(self._routing, self._vmap.copy(),
                          dataclasses.replace(arena, packed=arena.packed.copy()), self._live)

    @classmethod
    def build(cls, row_ids: np.ndarray, vectors: np.ndarray, metric: str = "l2",
              options: PartitionOptions | None = None, folder=None) -> PartitionIndex:
        """Balanced hierarchical k-means + boundary replication over (row_ids, vectors)."""
        options = options or PartitionOptions()
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
        idx = cls(vectors.shape[1], metric, options, folder)
        idx.options = options.validate().resolved(len(vectors))
        options = idx.options
        rids, x = idx._check_rows(row_ids, vectors)
        if len(rids) == 0:
            return idx
        cents = hierarchical_centroids(x, options.target_posting, options.seed)
        cn = np.einsum("ij,ij->i", cents, cents).astype(np.float32)
        idx._routing = Routing.create(cents, cn, np.ones(len(cents), bool))
        assign = idx._routing.assign(x, options.eps1, options.replicas)
        idx._vmap = V.grow(idx._vmap, int(rids.max()) + 1)
        vers = V.next_versions(idx._vmap, rids)
        sqn = np.einsum("ij,ij->i", x, x).astype(np.float32)
        rows = np.repeat(np.arange(len(rids)), (assign >= 0).sum(axis=1))
        posts = assign[assign >= 0]
        o = np.argsort(posts, kind="stable")
        lens = np.bincount(posts, minlength=len(cents)).astype(np.int64)
        r = rows[o]
        idx._store.bulk_load(lens, x[r], sqn[r], rids[r], vers[r])
        idx._set_primary(rids, assign[:, 0])
        idx._widen_radius(posts, x[rows])
        idx._vmap[rids] = vers
        idx._live = len(rids)
        # nearest-centroid assignment undoes some of k-means' balance: let LIRE split the
        # postings that came out over the limit and merge the near-empty ones, then start the
        # update counters from zero
        odd = (lens > options.max_posting) | (lens <= options.merge_threshold)
        idx._rebalancer.submit(np.flatnonzero(odd).tolist())
        idx._rebalancer.run_inline_if_idle()
        for key in idx.counters:
            idx.counters[key] = 0.0 if isinstance(idx.counters[key], float) else 0
        idx._publish()
        return idx

    # ------------------------------------------------------------------ validation
    def _check_rows(self, row_ids, vectors) -> tuple[np.ndarray, np.ndarray]:
        rids = np.asarray(row_ids)
        x = np.asarray(vectors)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {x.shape}")
        if rids.ndim != 1 or len(rids) != len(x):
            raise ValueError(f"row_ids must be 1-D with one id per vector: {rids.shape} vs {x.shape}")
        if len(rids) and not np.issubdtype(rids.dtype, np.integer):
            raise ValueError(f"row_ids must be integers, got dtype {rids.dtype}")
        rids = rids.astype(np.int64)
        if len(rids) and rids.min() < 0:
            raise ValueError(f"row ids must be >= 0, got {int(rids.min())}")
        if len(np.unique(rids)) != len(rids):
            raise ValueError("row_ids contain duplicates; pass each row once per call")
        return rids, self._prep(x, "vectors")

    def _prep(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or inf")
        if self.metric == "cosine":
            # norms in float64: a float32 norm of a tiny (subnormal) vector underflows to 0 and
            # of a huge one overflows to inf (x / inf = a zero "unit" vector)
            xd = x.astype(np.float64)
            n = np.sqrt(np.einsum("ij,ij->i", xd, xd))[:, None]
            if len(x) and n.min() == 0:
                row = int(np.argmin(n[:, 0]))
                raise ValueError(f"{what} row {row} is a zero vector, which has no cosine "
                                 f"distance (the table layer rejects them on cosine columns)")
            x = np.ascontiguousarray(xd / n, dtype=np.float32)
        return x

    def _unfinish_one(self, d: float) -> float:
        """`_unfinish` of one distance, in plain floats (the one-query latency path)."""
        return d * d if self.metric == "l2" else 2.0 * d if self.metric == "cosine" else d

    def _unfinish(self, d: np.ndarray) -> np.ndarray:
        """The metric's true distances back to internal scores (inverse of _finish_dist)."""
        if self.metric == "l2":
            return np.asarray(d, np.float64) ** 2
        if self.metric == "cosine":
            return np.asarray(d, np.float64) * 2.0
        return np.asarray(d, np.float64)

    def _finish_dist(self, d: np.ndarray) -> np.ndarray:
        """Internal (squared L2 / -dot) distances to the metric's true values."""
        if self.metric == "l2":
            return np.sqrt(np.maximum(d, 0.0))
        if self.metric == "cosine":
            return d / 2.0        # |a-b|^2 = 2 - 2 cos(a, b) on unit vectors
        return d                  # ip: -dot

    # ------------------------------------------------------------------ row bookkeeping
    def _set_primary(self, rids: np.ndarray, posts: np.ndarray) -> None:
        """Record primary postings of rows (writer only); keeps per-posting live counts."""
        need = int(rids.max()) + 1 if len(rids) else 0
        if need > len(self._primary):
            grow = np.full(max(need, 2 * len(self._primary)), -1, dtype=np.int64)
            grow[:len(self._primary)] = self._primary
            self._primary = grow
        old = self._primary[rids]
        had = old >= 0
        if had.any():
            np.subtract.at(self._plive, old[had], 1)
        self._primary[rids] = posts
        if len(posts):
            self._ensure_plive(int(posts.max()) + 1)
            np.add.at(self._plive, posts, 1)

    def _clear_primary(self, rids: np.ndarray) -> None:
        old = self._primary[rids]
        had = old >= 0
        if had.any():
            np.subtract.at(self._plive, old[had], 1)
        self._primary[rids] = -1

    def _ensure_plive(self, n: int) -> None:
        if n > len(self._plive):
            grow = np.zeros(max(n, 2 * len(self._plive)), dtype=np.int64)
            grow[:len(self._plive)] = self._plive
            self._plive = grow
        if n > len(self._radius):
            grow = np.zeros(max(n, 2 * len(self._radius)), dtype=np.float64)
            grow[:len(self._radius)] = self._radius
            self._radius = grow

    def _widen_radius(self, posts: np.ndarray, x: np.ndarray) -> None:
        """radius[p] = max(radius[p], |x - c_p|) for (posting, vector) pairs."""
        if len(posts) == 0:
            return
        self._ensure_plive(int(posts.max()) + 1)
        diff = x - self._routing.centroids[posts]
        r = np.sqrt(np.einsum("ij,ij->i", diff, diff).astype(np.float64))
        np.maximum.at(self._radius, posts, r)

    def _append_assigned(self, rids, x, sqn, vers, assign) -> list[int]:
        """Append each row to the postings of its assignment row; returns postings touched."""
        valid = assign >= 0
        rows = np.repeat(np.arange(len(rids)), valid.sum(axis=1))
        posts = assign[valid]
        o = np.argsort(posts, kind="stable")
        posts = posts[o]
        rows = rows[o]
        cuts = np.flatnonzero(np.diff(posts)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(posts)]])
        touched = []
        self._store.reserve_slots(int(posts.max()) + 1 if len(posts) else 0)
        self._widen_radius(posts, x[rows])
        for s, e in zip(starts, ends):
            p = int(posts[s])
            r = rows[s:e]
            self._store.append(p, x[r], sqn[r], rids[r], vers[r])
            touched.append(p)
        return touched

    # ------------------------------------------------------------------ writes
    def add(self, row_ids: np.ndarray, vectors: np.ndarray) -> None:
        """LIRE insert: append to the nearest partition(s); over-long postings queue a split.

        Re-adding a live row id replaces its vector. Without a running rebalancer thread the
        queued splits run before `add` returns."""
        rids, x = self._check_rows(row_ids, vectors)
        if len(rids) == 0:
            return
        with self._mutex:
            if self._routing.alive.sum() == 0:
                self._bootstrap(rids, x)
            else:
                self._vmap = V.grow(self._vmap, int(rids.max()) + 1)
                was_live = V.is_live(self._vmap, rids)
                vers = V.next_versions(self._vmap, rids)
                sqn = np.einsum("ij,ij->i", x, x).astype(np.float32)
                assign = self._routing.assign(x, self.options.eps1, self.options.replicas)
                touched = self._append_assigned(rids, x, sqn, vers, assign)
                self._set_primary(rids, assign[:, 0])
                self._vmap[rids] = vers                       # publish the new copies
                self._live += int(len(rids) - was_live.sum())
                over = [p for p in touched if self._store.length(p) > lire.split_limit(self, p)]
                self._rebalancer.submit(over)
            self._publish()
        self._rebalancer.run_inline_if_idle()

    def _bootstrap(self, rids: np.ndarray, x: np.ndarray) -> None:
        """First rows of an empty index: one posting, split by LIRE as it grows."""
        cent = x.mean(axis=0, keepdims=True).astype(np.float32)
        self._routing, new = self._routing.with_changes([], cent)
        self._vmap = V.grow(self._vmap, int(rids.max()) + 1)
        was_live = V.is_live(self._vmap, rids)
        vers = V.next_versions(self._vmap, rids)
        sqn = np.einsum("ij,ij->i", x, x).astype(np.float32)
        p = int(new[0])
        self._store.create(p, x, sqn, rids, vers)
        self._set_primary(rids, np.full(len(rids), p, dtype=np.int64))
        self._widen_radius(np.full(len(rids), p, dtype=np.int64), x)
        self._vmap[rids] = vers
        self._live += int(len(rids) - was_live.sum())
        if len(rids) > self.options.max_posting:
            self._rebalancer.submit([p])

    def delete(self, row_ids: np.ndarray) -> None:
        """Tombstone rows in the version map; their copies are dropped at the next split/merge.
        Unknown or already deleted ids are ignored."""
        rids = np.unique(np.asarray(row_ids, dtype=np.int64))
        with self._mutex:
            rids = rids[(rids >= 0) & (rids < len(self._vmap))]
            rids = rids[V.is_live(self._vmap, rids)]
            if len(rids) == 0:
                return
            posts = self._primary[rids]
            self._vmap[rids] |= V.DELETED
            self._clear_primary(rids)
            self._live -= len(rids)
            posts = np.unique(posts[posts >= 0])
            thr = self.options.merge_threshold
            lens = np.array([self._store.length(int(p)) for p in posts], dtype=np.int64)
            low = (self._plive[posts] <= thr) | (self._plive[posts] < lire.GC_LIVE_FRACTION * lens)
            self._rebalancer.submit([int(p) for p in posts[low]])
            self._publish()
        self._rebalancer.run_inline_if_idle()

    # ------------------------------------------------------------------ search
    def _probe_params(self, nprobe, eps2, max_partitions) -> tuple[float, int]:
        """nprobe=n means 'exactly the n nearest partitions' (eps2 off); otherwise eps2 and
        max_partitions default to the options."""
        if nprobe is not None:
            if nprobe < 1:
                raise ValueError(f"nprobe must be >= 1, got {nprobe}")
            return np.inf, int(nprobe)
        e = self.options.eps2 if eps2 is None else float(eps2)
        m = self.options.max_partitions if max_partitions is None else int(max_partitions)
        if m < 1 or not e >= 0:           # `not >=` also rejects NaN (which compares False)
            raise ValueError(f"max_partitions must be >= 1 and eps2 >= 0, got {m}/{e}")
        return e, m

    def _check_queries(self, queries) -> np.ndarray:
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (nq, {self.dim}), got {np.shape(queries)}")
        return self._prep(q, "queries")

    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None,
               eps2: float | None = None, max_partitions: int | None = None,
               allow: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest live rows per query: (ids (nq,k) int64 -1 padded, distances (nq,k) float64).

        `allow(row_ids) -> bool mask` filters rows; the probe widens until k allowed rows are
        found or every partition was probed. Unfiltered queries that come back with fewer than
        min(k, live rows) widen the same way."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if allow is None and np.shape(queries) in ((self.dim,), (1, self.dim)):
            return self._search_one(queries, k, nprobe, eps2, max_partitions)
        q = self._check_queries(queries)
        e, m = self._probe_params(nprobe, eps2, max_partitions)
        view = self._view
        routing, arena, vmap = view.routing, view.arena, view.vmap
        ip = self._mode == K.MODE_IP
        nq = len(q)
        ids = np.full((nq, k), -1, dtype=np.int64)
        dist = np.full((nq, k), np.inf, dtype=np.float64)
        if nq == 0 or not routing.alive.any():
            return ids, dist
        for s in range(0, nq, QUERY_CHUNK):
            qs = q[s:s + QUERY_CHUNK]
            posts, qidx, counts = routing.navigate(qs, ip, e, m)
            tie = np.zeros(len(qs), dtype=bool)
            if allow is None:
                ids[s:s + len(qs)], dist[s:s + len(qs)], worst = self._scan_pairs(
                    qs, posts, qidx, k, arena, vmap)
                tie = self._near_tie(qs, dist[s:s + len(qs), -1], worst)
            want = min(k, view.live)
            if allow is not None:
                redo = np.arange(len(qs))
            elif want > 0:      # under-filled (too few live rows in the probed postings)
                redo = np.flatnonzero((ids[s:s + len(qs), want - 1] < 0) | tie)
            else:
                redo = np.zeros(0, np.int64)
            for i in redo:
                ids[s + i], dist[s + i] = self._widening(qs[i], k, allow, max(int(counts[i]), 1),
                                                         routing, arena, vmap)
        return ids, self._finish_dist(dist)

    def _search_one(self, query, k, nprobe, eps2, max_partitions):
        """Latency path for one query: one fused kernel call (navigation, scan, re-rank,
        distances finished), its arrays prepared once per published view."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if self.metric == "cosine":
            q = self._prep(q[None, :], "queries")[0]
        if nprobe is None and eps2 is None and max_partitions is None:
            e, m = float(self.options.eps2), int(self.options.max_partitions)
        else:
            e, m = self._probe_params(nprobe, eps2, max_partitions)
        view = self._view
        cached = getattr(self, "_one_args", None)
        if cached is None or cached[0] is not view:
            routing, arena = view.routing, view.arena
            cached = (view, (*routing.nav_arrays(), arena.vecs, arena.sqn, arena.rids,
                             arena.vers, view.vmap, arena.packed))
            self._one_args = cached
        r, d, probed, worst = K.search_one(
            q, self._mode, m, e, self._mode == K.MODE_L2 and e != np.inf, *cached[1],
            k + RERANK_MARGIN, k, 0 if self.metric == "l2" else 1 if self.metric == "cosine" else 2)
        if probed < 0:
            raise ValueError("queries contain NaN or inf")
        if worst != np.inf and worst - self._scan_err(float(np.dot(q, q))) <= \
                self._unfinish_one(float(d[0, -1])):      # near tie: see SCAN_ERR_ULPS
            r, d = self._widening(q, k, None, max(probed, 1), view.routing, view.arena, view.vmap)
            return r[None, :], self._finish_dist(d)[None, :]
        if r[0, -1] < 0 and (r >= 0).sum() < min(k, view.live):
            r, d = self._widening(q, k, None, max(probed, 1), view.routing, view.arena, view.vmap)
            return r[None, :], self._finish_dist(d)[None, :]
        return r, d

    def _scan_pairs(self, q, posts, qidx, k, arena, vmap):
        """Batched scan: pairs grouped by posting so each posting is read once for all the
        queries probing it, then the exact re-rank."""
        o = np.argsort(posts, kind="stable")
        posts, qidx = posts[o], qidx[o]
        qn = np.einsum("ij,ij->i", q, q).astype(np.float32)
        hd, hr, hp = K.scan_topk_grouped(q, qn, self._mode, arena.vecs, arena.sqn, arena.rids,
                                        arena.vers, vmap, arena.packed, posts, qidx,
                                        k + RERANK_MARGIN)
        worst = np.where(hr[:, -1] >= 0, hd[:, 0].astype(np.float64), np.inf)   # heap full?
        return (*K.rerank_exact(q, self._mode, arena.vecs, hr, hp, k), worst)

    def _near_tie(self, q: np.ndarray, kth: np.ndarray, worst: np.ndarray) -> np.ndarray:
        """Per query: could float32 rounding have kept a row nearer than the k-th result out
        of the scan's heap? `kth` the exact k-th score (squared L2 / -dot), `worst` the largest
        float32 score the full heap held (+inf: not full, nothing dropped)."""
        full = np.isfinite(worst)
        if not full.any():
            return full
        qn = np.einsum("ij,ij->i", q.astype(np.float64), q.astype(np.float64))
        return full & (worst - self._scan_err(qn) <= kth)

    def _scan_err(self, qn):
        """Bound on the float32 rounding of a scan score for queries of squared norm qn."""
        return (self.dim + SCAN_ERR_ULPS) * EPS32 * (qn ** 0.5 + self._store.max_sqn ** 0.5) ** 2

    def _widening(self, q, k, allow, first, routing, arena, vmap):
        """Exact top-k over the probed partitions, doubling the probe until k (allowed) rows
        are held or every partition is probed."""
        order, _ = routing.order_all(q, self._mode == K.MODE_IP)
        got_r: list[np.ndarray] = []
        got_d: list[np.ndarray] = []
        done, n, held = 0, min(first, len(order)), 0
        stop_at = None
        while True:
            r, d = K.scan_all(q, self._mode, arena.vecs, arena.rids, arena.vers, vmap,
                              arena.packed, order[done:n])
            if allow is not None and len(r):
                mask = np.asarray(allow(r), dtype=bool)
                if mask.shape != r.shape:
                    raise ValueError(f"allow() must return one bool per row id: got shape "
                                     f"{mask.shape} for {r.shape}")
                r, d = r[mask], d[mask]
            got_r.append(r)
            got_d.append(d)
            held += len(r)
            done = n
            if done >= len(order):
                break
            if held >= k and stop_at is None:  # replicas repeat rows: count distinct ones
                held = len(np.unique(np.concatenate(got_r)))
                if held >= k:
                    if done == min(first, len(order)):
                        break          # the planned probe sufficed, as for an unfiltered query
                    # k rows needed a wider probe, so the filter is selective and its nearest
                    # rows are spread out: probe one more round (x WIDEN_FACTOR) for recall
                    stop_at = min(len(order), done * WIDEN_FACTOR)
            if stop_at is not None and done >= stop_at:
                break
            n = min(len(order), n * WIDEN_FACTOR) if stop_at is None else stop_at
        r = np.concatenate(got_r)
        d = np.concatenate(got_d)
        o = np.lexsort((r, d))
        r, d = r[o], d[o]
        _, first_idx = np.unique(r, return_index=True)
        first_idx.sort()
        r, d = r[first_idx][:k], d[first_idx][:k]
        out_r = np.full(k, -1, dtype=np.int64)
        out_d = np.full(k, np.inf)
        out_r[:len(r)] = r
        out_d[:len(d)] = d
        return out_r, out_d

    # ------------------------------------------------------------------ scan
    def scan(self, query: np.ndarray, *, batch_partitions: int = 1, eps2: float | None = None,
             max_partitions: int | None = None):
        """Iterator over live rows in increasing centroid distance (unidb.index.iterator)."""
        from unidb.index.partition.scan import PartitionScan
        q = self._check_queries(np.asarray(query).reshape(1, -1))[0]
        return PartitionScan(self, q, batch_partitions, eps2, max_partitions)

    # ------------------------------------------------------------------ stats / lifecycle
    def __len__(self) -> int:
        return self._live

    def posting_live_lengths(self) -> np.ndarray:
        """Valid entries of every live posting (a full pass; for stats and tests)."""
        view = self._view
        routing, arena, vmap = view.routing, view.arena, view.vmap
        return K.valid_counts(arena.rids, arena.vers, vmap, arena.packed,
                              routing.live_ids.astype(np.int64))

    def stats(self) -> dict:
        """Counters and shape of the index (posting lengths count valid entries)."""
        lens = self.posting_live_lengths()
        c = dict(self.counters)
        entries = int(lens.sum())
        c.update({
            "postings": len(lens),
            "live_vectors": int(self._live),
            "entries": entries,
            "replicas_ratio": entries / self._live if self._live else 0.0,
            "posting_len_p50": float(np.percentile(lens, 50)) if len(lens) else 0.0,
            "posting_len_p99": float(np.percentile(lens, 99)) if len(lens) else 0.0,
            "posting_len_max": int(lens.max()) if len(lens) else 0,
            "posting_len_min": int(lens.min()) if len(lens) else 0,
            "pending_rebalance_jobs": self._rebalancer.pending(),
            "unsplittable_postings": len(self._unsplittable),
            "arena_rows": int(self._store.tail),
            "arena_garbage_rows": int(self._store.garbage),
        })
        c["rebalancer_cpu_seconds"] = c.pop("rebalance_cpu_s")
        return c

    def start_rebalancer(self) -> None:
        """Run splits/merges/reassignments on one background thread."""
        self._rebalancer.start()

    def stop_rebalancer(self) -> None:
        """Stop the background thread after its current job (pending jobs stay queued)."""
        self._rebalancer.stop()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no rebalance job is pending or running; False on timeout."""
        return self._rebalancer.wait_idle(timeout)

    # ------------------------------------------------------------------ persistence
    def save(self, folder, covered: int) -> None:
        """Crash-safe snapshot into `folder`, recording the WAL position `covered`."""
        from unidb.index.partition import persist
        persist.save(self, folder, covered)

    @classmethod
    def load(cls, folder) -> tuple[PartitionIndex, int]:
        """(index, covered) from the last complete snapshot in `folder`."""
        from unidb.index.partition import persist
        return persist.load(cls, folder)

    def close(self) -> None:
        """Stop the rebalancer and release posting files."""
        self._rebalancer.stop()
        self._store.close()
