"""PartitionIndex: SPANN partitions over row ids, kept fresh in place by LIRE.

Read top to bottom: validation and metric handling, build, add/delete (LIRE insert and
tombstones), search (batched: one GEMM against the centroids, then every probed posting
scanned once for all its queries), the widening path for filters and under-filled results,
scan, stats, persistence. Routing lives in routing.py, posting storage behind the contract of
store.py (built-in stores: postings.py), the writer's state in state.py, the rebalancer in
lire.py, the on-disk snapshot in persist.py.

Concurrency: one mutex serialises writers (add, delete, one rebalance job at a time); readers
never lock. Writers work on the `PartitionState` inside `writing()` and, when an operation is
complete, publish one immutable `View` (routing, a copy of the version map, a posting view);
an operation that raises is rolled back to the last published view instead. A reader takes
`view()` once and sees a consistent snapshot for as long as it likes (state.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from unidb.index.partition import lire, persist
from unidb.index.partition import versions as V
from unidb.index.partition.kmeans import hierarchical_centroids
from unidb.index.partition.options import PartitionOptions
from unidb.index.partition.postings import make_store
from unidb.index.partition.routing import Routing
from unidb.index.partition.state import PartitionState, View
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
        self.folder = None if folder is None else Path(folder)
        self._mode = K.MODE_IP if metric == "ip" else K.MODE_L2
        options = options.validate().resolved(0)
        self._state = PartitionState(self.dim, options, make_store(options.storage, self.dim,
                                                                   folder, options.quantization))
        self.counters = self._state.counters       # LIRE's counters (one dict, shared)
        self._rebalancer = lire.Rebalancer(self._state)
        # one-query path: (view, its routing's navigation arrays), and how the fused kernel
        # finishes distances (kernels.partition.search_one)
        self._one_nav: tuple = (None, None)
        self._finish_code = 0 if metric == "l2" else 1 if metric == "cosine" else 2

    @property
    def options(self) -> PartitionOptions:
        """The options in force (posting sizes resolved at build)."""
        return self._state.options

    def view(self) -> View:
        """The snapshot readers use: routing, version map and posting view published together
        by the last complete write (state.py)."""
        return self._state.view

    @classmethod
    def build(cls, row_ids: np.ndarray, vectors: np.ndarray, metric: str = "l2",
              options: PartitionOptions | None = None, folder=None) -> PartitionIndex:
        """Balanced hierarchical k-means + boundary replication over (row_ids, vectors)."""
        options = options or PartitionOptions()
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
        idx = cls(vectors.shape[1], metric, options, folder)
        st = idx._state
        st.options = options = options.validate().resolved(len(vectors))
        rids, x = idx._check_rows(row_ids, vectors)
        if len(rids) == 0:
            return idx
        cents = hierarchical_centroids(x, options.target_posting, options.seed)
        cn = np.einsum("ij,ij->i", cents, cents).astype(np.float32)
        st.routing = Routing.create(cents, cn, np.ones(len(cents), bool))
        assign = st.routing.assign(x, options.eps1, options.replicas)
        st.vmap = V.grow(st.vmap, int(rids.max()) + 1)
        vers = V.next_versions(st.vmap, rids)
        sqn = np.einsum("ij,ij->i", x, x).astype(np.float32)
        rows = np.repeat(np.arange(len(rids)), (assign >= 0).sum(axis=1))
        posts = assign[assign >= 0]
        o = np.argsort(posts, kind="stable")
        lens = np.bincount(posts, minlength=len(cents)).astype(np.int64)
        r = rows[o]
        st.note_norms(sqn)
        st.store.bulk_load(lens, x[r], sqn[r], rids[r], vers[r])
        st.set_primary(rids, assign[:, 0])
        st.widen_radius(posts, x[rows])
        st.vmap[rids] = vers
        st.live = len(rids)
        # nearest-centroid assignment undoes some of k-means' balance: let LIRE split the
        # postings that came out over the limit and merge the near-empty ones, then start the
        # update counters from zero
        odd = (lens > options.max_posting) | (lens <= options.merge_threshold)
        idx._rebalancer.submit(np.flatnonzero(odd).tolist())
        idx._rebalancer.run_inline_if_idle()
        for key in idx.counters:
            idx.counters[key] = 0.0 if isinstance(idx.counters[key], float) else 0
        st.publish()
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

    # ------------------------------------------------------------------ writes
    def add(self, row_ids: np.ndarray, vectors: np.ndarray) -> None:
        """LIRE insert: append to the nearest partition(s); over-long postings queue a split.

        Re-adding a live row id replaces its vector. Without a running rebalancer thread the
        queued splits run before `add` returns."""
        rids, x = self._check_rows(row_ids, vectors)
        if len(rids) == 0:
            return
        st = self._state
        with st.writing():          # published whole, or rolled back if it raises
            if st.routing.alive.sum() == 0:
                self._bootstrap(rids, x)
            else:
                st.vmap = V.grow(st.vmap, int(rids.max()) + 1)
                was_live = V.is_live(st.vmap, rids)
                vers = V.next_versions(st.vmap, rids)
                sqn = np.einsum("ij,ij->i", x, x).astype(np.float32)
                assign = st.routing.assign(x, st.options.eps1, st.options.replicas)
                touched = st.append_assigned(rids, x, sqn, vers, assign)
                st.set_primary(rids, assign[:, 0])
                st.vmap[rids] = vers                          # publish the new copies
                st.live += int(len(rids) - was_live.sum())
                over = [p for p in touched if st.store.length(p) > lire.split_limit(st, p)]
                self._rebalancer.submit(over)
        self._rebalancer.run_inline_if_idle()

    def _bootstrap(self, rids: np.ndarray, x: np.ndarray) -> None:
        """First rows of an empty index: one posting, split by LIRE as it grows."""
        st = self._state
        cent = x.mean(axis=0, keepdims=True).astype(np.float32)
        st.routing, new = st.routing.with_changes([], cent)
        st.vmap = V.grow(st.vmap, int(rids.max()) + 1)
        was_live = V.is_live(st.vmap, rids)
        vers = V.next_versions(st.vmap, rids)
        sqn = np.einsum("ij,ij->i", x, x).astype(np.float32)
        p = int(new[0])
        st.note_norms(sqn)
        st.store.replace(p, x, sqn, rids, vers)
        st.set_primary(rids, np.full(len(rids), p, dtype=np.int64))
        st.widen_radius(np.full(len(rids), p, dtype=np.int64), x)
        st.vmap[rids] = vers
        st.live += int(len(rids) - was_live.sum())
        if len(rids) > st.options.max_posting:
            self._rebalancer.submit([p])

    def delete(self, row_ids: np.ndarray) -> int:
        """Tombstone rows in the version map; their copies are dropped at the next split/merge.
        Unknown or already deleted ids are ignored. Returns how many rows were live."""
        rids = np.unique(np.asarray(row_ids, dtype=np.int64))
        st = self._state
        with st.mutex:
            rids = rids[(rids >= 0) & (rids < len(st.vmap))]
            rids = rids[V.is_live(st.vmap, rids)]
            if len(rids) == 0:
                return 0
            with st.writing():      # published whole, or rolled back if it raises
                posts = st.primary[rids]
                st.vmap[rids] |= V.DELETED
                st.clear_primary(rids)
                st.live -= len(rids)
                posts = np.unique(posts[posts >= 0])
                thr = st.options.merge_threshold
                lens = st.store.lengths(posts)
                low = (st.plive[posts] <= thr) | (st.plive[posts] < lire.GC_LIVE_FRACTION * lens)
                self._rebalancer.submit([int(p) for p in posts[low]])
        self._rebalancer.run_inline_if_idle()
        return len(rids)

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
        view = self._state.view
        routing, postings, vmap = view.routing, view.postings, view.vmap
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
                    qs, posts, qidx, k, postings, vmap)
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
                                                         routing, postings, vmap)
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
        view = self._state.view
        nav = self._one_nav
        if nav[0] is not view:
            nav = self._one_nav = (view, view.routing.nav_arrays())
        r, d, probed, worst = view.postings.search_one(
            q, self._mode, nav[1], view.vmap, m, e, self._mode == K.MODE_L2 and e != np.inf,
            k + RERANK_MARGIN, k, self._finish_code)
        if probed < 0:
            raise ValueError("queries contain NaN or inf")
        if worst != np.inf and worst - self._scan_err(float(np.dot(q, q))) <= \
                self._unfinish_one(float(d[0, -1])):      # near tie: see SCAN_ERR_ULPS
            r, d = self._widening(q, k, None, max(probed, 1), view.routing, view.postings,
                                  view.vmap)
            return r[None, :], self._finish_dist(d)[None, :]
        if r[0, -1] < 0 and (r >= 0).sum() < min(k, view.live):
            r, d = self._widening(q, k, None, max(probed, 1), view.routing, view.postings,
                                  view.vmap)
            return r[None, :], self._finish_dist(d)[None, :]
        return r, d

    def _scan_pairs(self, q, posts, qidx, k, postings, vmap):
        """Batched scan: pairs grouped by posting so each posting is read once for all the
        queries probing it, then the exact re-rank."""
        o = np.argsort(posts, kind="stable")
        posts, qidx = posts[o], qidx[o]
        qn = np.einsum("ij,ij->i", q, q).astype(np.float32)
        return postings.topk(q, qn, self._mode, vmap, posts, qidx, k + RERANK_MARGIN, k)

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
        return (self.dim + SCAN_ERR_ULPS) * EPS32 * (qn ** 0.5 + self._state.max_sqn ** 0.5) ** 2

    def _widening(self, q, k, allow, first, routing, postings, vmap):
        """Exact top-k over the probed partitions, doubling the probe until k (allowed) rows
        are held or every partition is probed."""
        order, _ = routing.order_all(q, self._mode == K.MODE_IP)
        got_r: list[np.ndarray] = []
        got_d: list[np.ndarray] = []
        done, n, held = 0, min(first, len(order)), 0
        stop_at = None
        while True:
            r, d = postings.scan_all(q, self._mode, vmap, order[done:n])
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
        """Live rows."""
        return self._state.live

    def posting_live_lengths(self) -> np.ndarray:
        """Valid entries of every live posting (a full pass; for stats and tests)."""
        view = self._state.view
        return view.postings.valid_counts(view.vmap, view.routing.live_ids.astype(np.int64))

    # Every key stats() returns (index.contract: "live_rows" and "bytes" are common to all).
    STATS_KEYS = ("splits", "merges", "compactions", "reassign_evaluated", "vectors_moved",
                  "arena_compactions", "unsplittable", "rebalancer_cpu_seconds", "postings",
                  "live_vectors", "live_rows", "entries", "replicas_ratio", "posting_len_p50",
                  "posting_len_p99", "posting_len_max", "posting_len_min",
                  "pending_rebalance_jobs", "unsplittable_postings", "arena_rows",
                  "arena_garbage_rows", "bytes")

    def stats(self) -> dict:
        """Counters (LIRE's: splits, merges, ...) and shape of the index: postings and their
        valid-entry lengths, live rows (`live_vectors` = `live_rows`), stored entries and the
        posting store's rows / garbage rows (`arena_rows`, `arena_garbage_rows`), `bytes` held
        by the store and the routing / per-row arrays."""
        st = self._state
        lens = self.posting_live_lengths()
        store = st.store.stats()
        c = dict(self.counters)
        entries = int(lens.sum())
        live = int(st.live)
        c.update({
            "postings": len(lens),
            "live_vectors": live,
            "live_rows": live,
            "entries": entries,
            "replicas_ratio": entries / live if live else 0.0,
            "posting_len_p50": float(np.percentile(lens, 50)) if len(lens) else 0.0,
            "posting_len_p99": float(np.percentile(lens, 99)) if len(lens) else 0.0,
            "posting_len_max": int(lens.max()) if len(lens) else 0,
            "posting_len_min": int(lens.min()) if len(lens) else 0,
            "pending_rebalance_jobs": self._rebalancer.pending(),
            "unsplittable_postings": len(st.unsplittable),
            "arena_rows": store["rows"],
            "arena_garbage_rows": store["garbage_rows"],
            "bytes": store["bytes"] + sum(a.nbytes for a in (
                st.routing.centroids, st.routing.cnorms, st.routing.alive, st.vmap, st.primary,
                st.plive, st.radius)),
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
        persist.save(self._state, self.dim, self.metric, folder, covered)

    @classmethod
    def load(cls, folder) -> tuple[PartitionIndex, int]:
        """(index, covered) from the last complete snapshot in `folder`."""
        man = persist.read_manifest(folder)
        idx = cls(int(man["dim"]), man["metric"], PartitionOptions(**man["options"]), folder)
        persist.restore(idx._state, folder, man)
        return idx, int(man["covered"])

    def close(self) -> None:
        """Stop the rebalancer and release the posting store's files. Idempotent."""
        self._rebalancer.stop()
        self._state.store.close()
