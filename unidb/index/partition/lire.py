"""LIRE (SPFresh, ALGORITHMS.md §3): split, merge and reassign, one posting per job.

A job is "maintain posting p": drop dead and stale copies; if still over the split limit,
split it with balanced 2-means and reassign the vectors the two rules of §3 name; if it holds
<= merge_threshold live vectors, retire it and reassign its rows to their new nearest
partitions. One job holds the index mutex at a time, so inserts interleave with rebalancing
and queries never wait (they do not lock at all).

Publication order keeps every live row visible to a concurrent reader at every instant:
new postings are written before the routing snapshot that names them is published; a moved
row's new copies are appended before its version is bumped; a retired posting's arena slice is
never overwritten, so a reader holding the old routing still reads valid (then stale) copies.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np

from unidb.index.partition import versions as V
from unidb.index.partition.kmeans import balanced_two_means
from unidb.kernels import partition as K

# A posting whose live primaries fall under this fraction of its stored entries is queued for
# compaction (its dead copies cost scan time on every probe).
GC_LIVE_FRACTION = 0.35
# When a posting's valid entries are under this fraction of its stored length, the maintain
# job rewrites it compacted even if no split or merge is due.
COMPACT_VALID_FRACTION = 0.6
# The whole arena is rewritten when more than this fraction of its rows is garbage.
ARENA_GARBAGE_FRACTION = 0.5
ARENA_MIN_ROWS = 1 << 16
# At most this many x ReassignK postings are checked because a new centroid is within reach
# of their radius (bounds one split's work when radii are inflated by outliers).
REACH_CAP_FACTOR = 1
REACH_CAP_MIN = 64   # ...and only once it is big enough for that to matter


class Rebalancer:
    """Job queue + optional background thread owning all splits, merges and version bumps."""

    def __init__(self, index):
        self.index = index
        self._jobs: OrderedDict[int, None] = OrderedDict()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._busy = False

    # -- queue -----------------------------------------------------------------------------
    def submit(self, postings) -> None:
        with self._cv:
            for p in postings:
                self._jobs[int(p)] = None
            self._cv.notify_all()

    def pending(self) -> int:
        with self._cv:
            return len(self._jobs) + (1 if self._busy else 0)

    def _pop(self) -> int | None:
        with self._cv:
            if not self._jobs:
                return None
            p, _ = self._jobs.popitem(last=False)
            self._busy = True
            return p

    def _done(self) -> None:
        with self._cv:
            self._busy = False
            self._cv.notify_all()

    def _run_one(self, p: int) -> None:
        t0 = time.thread_time()
        try:
            with self.index._mutex:
                more = maintain(self.index, p)
                self.index._publish()
                self.index.counters["rebalance_cpu_s"] += time.thread_time() - t0
            self.submit(more)
        finally:
            self._done()

    # -- inline mode -------------------------------------------------------------------------
    def run_inline_if_idle(self) -> None:
        """Without a background thread, writers run the queued jobs themselves."""
        if self._thread is None:
            while (p := self._pop()) is not None:
                self._run_one(p)

    # -- background thread -------------------------------------------------------------------
    def start(self) -> None:
        with self._cv:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="unidb-lire", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cv:
            t = self._thread
            self._stop = True
            self._cv.notify_all()
        if t is not None:
            t.join()
        with self._cv:
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
            p = self._pop()
            if p is not None:
                self._run_one(p)

    def wait_idle(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            self.run_inline_if_idle()
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._jobs or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True


# ------------------------------------------------------------------------------ jobs
def _valid_entries(idx, p: int):
    """Copies of posting p's valid entries: (vecs, sqn, rids, vers), and the stored length."""
    vecs, sqn, rids, vers = idx._store.read(p)
    vmap = idx._vmap
    inside = rids < len(vmap)
    ok = np.zeros(len(rids), dtype=bool)
    ok[inside] = vmap[rids[inside]] == vers[inside]
    return vecs[ok].copy(), sqn[ok].copy(), rids[ok].copy(), vers[ok].copy(), len(rids)


def maintain(idx, p: int) -> list[int]:
    """Bring posting p within limits; returns postings that now need a job of their own."""
    routing = idx._routing
    if p >= routing.n_slots or not routing.alive[p]:
        return []
    opts = idx.options
    vecs, sqn, rids, vers, stored = _valid_entries(idx, p)
    n = len(rids)
    more: list[int] = []
    if n <= opts.merge_threshold and routing.alive.sum() > 1:
        more = _merge(idx, p, vecs, sqn, rids, vers)
    elif n > opts.max_posting:
        more = _split(idx, p, vecs, sqn, rids, vers)
    elif n < stored * COMPACT_VALID_FRACTION or stored > opts.max_posting:
        idx._store.create(p, vecs, sqn, rids, vers)
        idx.counters["compactions"] += 1
    _maybe_compact_arena(idx)
    return more


def _split(idx, p: int, vecs, sqn, rids, vers) -> list[int]:
    opts = idx.options
    rng = np.random.default_rng([opts.seed, idx.counters["splits"]])
    c2, a = balanced_two_means(vecs, rng)
    # each row goes to the nearer new centroid: the balance penalty shaped the centroids, but
    # a row kept on its farther side would sit outside its nearest partition for good
    if len(c2) == 2:
        a = (((vecs - c2[1]) ** 2).sum(1) < ((vecs - c2[0]) ** 2).sum(1)).astype(np.int64)
    if len(c2) < 2 or a.min() == a.max():     # degenerate (duplicates): split by position
        a = (np.arange(len(rids)) >= len(rids) // 2).astype(np.int64)
        c2 = np.stack([vecs[a == 0].mean(0), vecs[a == 1].mean(0)]).astype(np.float32)
    old = idx._routing
    ao = old.centroids[p].copy()
    new_routing, (p1, p2) = old.with_changes([p], c2)
    store = idx._store
    for j, pj in ((0, p1), (1, p2)):
        m = a == j
        store.create(int(pj), vecs[m], sqn[m], rids[m], vers[m])
    # primaries that lived in p now live in p1 / p2
    prim = idx._primary[rids] == p
    idx._set_primary(rids[prim], np.where(a[prim] == 0, p1, p2).astype(np.int64))
    idx._routing = new_routing                       # publish: p retired, p1 and p2 routed
    for j, pj in ((0, p1), (1, p2)):
        idx._widen_radius(np.full(int((a == j).sum()), pj, dtype=np.int64), vecs[a == j])
    store.retire(p)
    idx.counters["splits"] += 1

    # reassign candidates (SPFresh's two conditions)
    def sqd(x, c):
        diff = x - c[None, :]
        return np.einsum("ij,ij->i", diff, diff)
    do, d1, d2 = sqd(vecs, ao), sqd(vecs, c2[0]), sqd(vecs, c2[1])
    own = (do <= d1) & (do <= d2)
    cand_r = [rids[own]]
    cand_x = [vecs[own]]
    evaluated = len(rids)
    # neighbours: the ReassignK postings nearest to Ao (SPFresh), plus every posting within
    # 2 x its radius of A1 or A2 (by the triangle inequality, no other posting can hold a row
    # nearer to A1/A2 than to its own centroid); under drift the new centroids can sit far
    # from Ao, next to rows parked in distant postings.
    cd = new_routing.centroid_sq_dists(np.stack([ao, c2[0], c2[1]]).astype(np.float32))
    kk = min(opts.reassign_k, cd.shape[1])
    near = np.argpartition(cd[0], kk - 1)[:kk]
    rad = idx._radius[:cd.shape[1]]
    slack = np.sqrt(np.minimum(cd[1], cd[2])) - 2.0 * rad
    reach = np.flatnonzero(slack < 0)
    cap = max(REACH_CAP_FACTOR * opts.reassign_k, REACH_CAP_MIN)
    if len(reach) > cap:
        reach = reach[np.argsort(slack[reach], kind="stable")[:cap]]
    near = np.union1d(near, reach)
    near = near[(near != p1) & (near != p2) & new_routing.alive[near]].astype(np.int64)
    arena = store.arena
    # SPFresh tests neighbours against Ao; we test against the centroid of the posting a row
    # is in, which is what "would a new centroid be nearer" means once p is gone
    pos, ev = K.split_neighbour_candidates(arena.vecs, arena.rids, arena.vers, idx._vmap,
                                           arena.packed, near, new_routing.centroids[near],
                                           c2[0].astype(np.float32), c2[1].astype(np.float32))
    evaluated += int(ev)
    cand_r.append(arena.rids[pos])
    cand_x.append(arena.vecs[pos])
    idx.counters["reassign_evaluated"] += evaluated
    cr = np.concatenate(cand_r)
    cx = np.concatenate(cand_x)
    if len(cr):
        cr, first = np.unique(cr, return_index=True)
        cx = cx[first]
    more = _reassign(idx, cr, cx, only_if_moved=True)
    return more + [int(pj) for pj in (p1, p2) if store.length(int(pj)) > opts.max_posting
                   or idx._plive[int(pj)] <= opts.merge_threshold]


def _merge(idx, p: int, vecs, sqn, rids, vers) -> list[int]:
    """Retire p; its rows whose primary copy lived there move to their new nearest postings."""
    mine = idx._primary[rids] == p
    exclude = np.array([p], dtype=np.int64)
    more = _reassign(idx, rids[mine], vecs[mine], only_if_moved=False, exclude=exclude)
    idx._routing, _ = idx._routing.with_changes([p], np.zeros((0, idx.dim), np.float32))
    idx._store.retire(p)
    idx.counters["merges"] += 1
    return more


def _reassign(idx, rids: np.ndarray, vecs: np.ndarray, only_if_moved: bool,
              exclude: np.ndarray | None = None) -> list[int]:
    """Recompute the postings of rows; rows whose nearest posting changed get a new version
    and fresh copies (older copies turn stale). Returns postings now over the split limit."""
    if len(rids) == 0:
        return []
    opts = idx.options
    assign = idx._routing.assign(vecs, opts.eps1, opts.replicas, exclude=exclude)
    if only_if_moved:
        moved = assign[:, 0] != idx._primary[rids]
        rids, vecs, assign = rids[moved], vecs[moved], assign[moved]
        if len(rids) == 0:
            return []
    vers = V.next_versions(idx._vmap, rids)
    sqn = np.einsum("ij,ij->i", vecs, vecs).astype(np.float32)
    touched = idx._append_assigned(rids, vecs, sqn, vers, assign)
    left = np.unique(idx._primary[rids])
    idx._set_primary(rids, assign[:, 0])
    idx._vmap[rids] = vers                         # publish: old copies become stale
    idx.counters["vectors_moved"] += len(rids)
    left = left[left >= 0]
    drained = left[idx._plive[left] <= opts.merge_threshold]   # emptied by the move: merge
    return [p for p in touched if idx._store.length(p) > opts.max_posting] + drained.tolist()


def _maybe_compact_arena(idx) -> None:
    """Rewrite the arena without garbage (retired slices, dead and stale copies)."""
    store = idx._store
    if store.tail < ARENA_MIN_ROWS or store.garbage < ARENA_GARBAGE_FRACTION * store.tail:
        return
    routing, arena, vmap = idx._routing, store.arena, idx._vmap
    live = routing.live_ids
    lens = np.zeros(routing.n_slots, dtype=np.int64)
    pos = []
    for p in live:
        vp = K.valid_positions(arena.rids, arena.vers, vmap, arena.packed, np.array([p], np.int64))
        lens[p] = len(vp)
        pos.append(vp)
    pos = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    store.bulk_load(lens, arena.vecs[pos], arena.sqn[pos], arena.rids[pos], arena.vers[pos])
    idx.counters["arena_compactions"] += 1
