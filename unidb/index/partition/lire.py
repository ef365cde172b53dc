"""LIRE (SPFresh, ALGORITHMS.md §3): split, merge and reassign, one posting per job.

A job is "maintain posting p": drop dead and stale copies; if still over the split limit,
split it with balanced 2-means and reassign the vectors the two rules of §3 name; if it holds
<= merge_threshold valid entries, merge it with the nearest posting whose combined size fits
(one new posting at the pair's mean) and reassign the rows the move of the centroid concerns. One job holds the index mutex at a time, so inserts interleave with rebalancing
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
# ...or more than this fraction once the arena is this full: compacting writes only the valid
# rows into fresh memory, where growing would copy every row, garbage included (first touch
# of fresh pages ran at 0.4-0.8 GB/s on the benchmark VM: one growth cost 0.2-0.35 s)
ARENA_FULL_FRACTION = 0.85
ARENA_GARBAGE_FULL = 0.25
# At most this many x ReassignK postings are checked because a new centroid is within reach
# of their radius (bounds one split's work when radii are inflated by outliers).
REACH_CAP_FACTOR = 1
REACH_CAP_MIN = 64   # ...and only once it is big enough for that to matter
# A merge looks for its partner among this many postings nearest to the small one...
MERGE_NEIGHBOURS = 8
# ...and takes the nearest whose combined valid entries fit in this fraction of max_posting:
# the slack keeps the merged posting from splitting again at the next few inserts (and a split
# half that came out under the threshold from being merged back into its sibling).
MERGE_FILL = 0.75
# A posting whose rows cannot be split (duplicates: kmeans.balanced_two_means returns None) is
# kept whole, over max_posting, and not tried again until its valid entries grow by this
# factor: a retry costs a read of the posting, so retrying on every insert into a posting of
# 100k copies of one vector would cost 100k rows per insert; geometric growth makes it O(1)
# per insert. (New distinct rows wait at most this long for a split that separates them.)
UNSPLITTABLE_REGROW = 1.5


def split_limit(idx, p: int) -> int:
    """Entries over which posting p is due a split: max_posting, or more for a posting found
    unsplittable (until it has grown by UNSPLITTABLE_REGROW)."""
    return max(idx.options.max_posting, idx._unsplittable.get(p, 0))


def _forget(idx, p: int) -> None:
    """Posting p retires: drop its unsplittable mark (ids are never reused while open)."""
    idx._unsplittable.pop(p, None)


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


def _valid_count(idx, p: int) -> int:
    """Valid entries of posting p (one pass over it)."""
    return int(K.valid_counts(idx._store.arena.rids, idx._store.arena.vers, idx._vmap,
                              idx._store.arena.packed, np.array([p], dtype=np.int64))[0])


def maintain(idx, p: int) -> list[int]:
    """Bring posting p within limits; returns postings that now need a job of their own."""
    routing = idx._routing
    if p >= routing.n_slots or not routing.alive[p]:
        return []
    opts = idx.options
    vecs, sqn, rids, vers, stored = _valid_entries(idx, p)
    n = len(rids)
    more: list[int] = []
    limit = split_limit(idx, p)
    if n <= opts.merge_threshold and routing.alive.sum() > 1:
        more = _merge(idx, p, vecs, sqn, rids, vers)
    elif n > limit:
        more = _split(idx, p, vecs, sqn, rids, vers, stored)
    elif n < stored * COMPACT_VALID_FRACTION or stored > limit:
        idx._store.create(p, vecs, sqn, rids, vers)
        idx.counters["compactions"] += 1
    _maybe_compact_arena(idx)
    return more


def _split(idx, p: int, vecs, sqn, rids, vers, stored: int) -> list[int]:
    opts = idx.options
    rng = np.random.default_rng([opts.seed, idx.counters["splits"]])
    # rows go to their nearer new centroid unless one side would fall under 30% of them (or
    # to the merge threshold: a side merged away at once would hand its rows back to this
    # posting's successor, which splits them off again); duplicates stay on one side
    cut = balanced_two_means(vecs, rng, min_rows=opts.merge_threshold + 1)
    if cut is None:
        return _keep_unsplittable(idx, p, vecs, sqn, rids, vers, stored)
    c2, a = cut
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
    _forget(idx, p)
    idx.counters["splits"] += 1

    # reassign candidates (SPFresh's two conditions)
    def sqd(x, c):
        diff = x - c[None, :]
        return np.einsum("ij,ij->i", diff, diff)
    do, d1, d2 = sqd(vecs, ao), sqd(vecs, c2[0]), sqd(vecs, c2[1])
    own = (do <= d1) & (do <= d2)
    nr, nx, near = _neighbour_candidates(idx, ao, c2[0], c2[1], (p1, p2))
    cr, cx = _unique_rows([rids[own], nr], [vecs[own], nx])
    idx.counters["reassign_evaluated"] += len(rids)
    more = _reassign(idx, cr, cx, only_if_moved=True, among=np.concatenate([near, [p1, p2]]))
    drained = [idx._plive[int(pj)] <= opts.merge_threshold for pj in (p1, p2)]
    if drained[0] != drained[1]:
        # The split did not hold: reassignment emptied one side. Merging it now would hand
        # most of its rows back to the other side (their nearest), which would split again,
        # and so on (a tight cluster of ~max_posting rows plus stragglers that cannot stand
        # alone did this 21,000 times in one build; before this change a 60k-row drift run
        # did not go idle within 120 s). So the small side is not queued (a later write may
        # queue it), and the big side may take its rows back without a split: its limit
        # becomes the pair's entries. (Keeping the big side whole until 1.5x, as for
        # duplicates, also ended the cascades but let drift postings reach 1.7 x max_posting;
        # not queueing the small side alone still took 12,395 splits for 600 inserts.)
        big, small = (int(p2), int(p1)) if drained[0] else (int(p1), int(p2))
        idx._unsplittable[big] = max(opts.max_posting,
                                     _valid_count(idx, big) + _valid_count(idx, small))
        idx.counters["unsplittable"] += 1
        return [q for q in more if q != small] + \
            [big] * (store.length(big) > split_limit(idx, big))
    return more + [int(pj) for pj in (p1, p2) if store.length(int(pj)) > opts.max_posting
                   or idx._plive[int(pj)] <= opts.merge_threshold]


def _mark_unsplittable(idx, p: int, entries: int) -> None:
    """No split of posting p before it holds UNSPLITTABLE_REGROW x `entries`."""
    idx._unsplittable[p] = max(idx.options.max_posting, int(np.ceil(UNSPLITTABLE_REGROW * entries)))
    idx.counters["unsplittable"] += 1


def _keep_unsplittable(idx, p: int, vecs, sqn, rids, vers, stored: int) -> list[int]:
    """Posting p's rows cannot be separated (copies of one vector, or a split that would leave
    a side too small to stand): keep it as one posting over max_posting and mark it so that no
    job splits it again before it has grown UNSPLITTABLE_REGROW x. Searches stay exact (the
    posting is scanned like any other, only longer); the alternative, cutting it by row id,
    makes postings with equal centroids between which every insert and reassignment picks the
    same one, which fills up and is cut again. Returns no follow-up job: nothing changed."""
    _mark_unsplittable(idx, p, len(rids))
    if len(rids) < stored:                           # drop dead / stale copies while here
        idx._store.create(p, vecs, sqn, rids, vers)
        idx.counters["compactions"] += 1
    return []


def _unique_rows(rid_parts, vec_parts):
    cr = np.concatenate(rid_parts)
    cx = np.concatenate(vec_parts)
    if len(cr):
        cr, first = np.unique(cr, return_index=True)
        cx = cx[first]
    return cr, cx


def _neighbour_candidates(idx, anchor, a1, a2, new_ids):
    """Rows of neighbouring postings that new centroid a1 or a2 is nearer to than their own
    posting's centroid: (row ids, vectors, possibly repeated (replicas); the neighbour slots).

    Neighbours: the ReassignK postings nearest to `anchor` (SPFresh: the old centroid), plus
    every posting within 2 x its radius of a1 or a2 (by the triangle inequality, no other
    posting can hold a row nearer to a1/a2 than to its own centroid); under drift a new
    centroid can sit far from the old one, next to rows parked in distant postings. (Using the
    same bound to prune the nearest ReassignK skipped nothing on synth200k drift: radii are
    maxima over every row ever appended, so all near postings are in reach.)"""
    opts = idx.options
    routing = idx._routing
    ids = routing.live_ids           # distances over live slots only: retired ones pile up
    cd = routing.live_scores(np.stack([anchor, a1, a2]).astype(np.float32), False)
    kk = min(opts.reassign_k, len(ids))
    near = np.argpartition(cd[0], kk - 1)[:kk]
    idx._ensure_plive(routing.n_slots)
    slack = np.sqrt(np.minimum(cd[1], cd[2])) - 2.0 * idx._radius[ids]
    reach = np.flatnonzero(slack < 0)
    cap = max(REACH_CAP_FACTOR * opts.reassign_k, REACH_CAP_MIN)
    if len(reach) > cap:
        reach = reach[np.argsort(slack[reach], kind="stable")[:cap]]
    near = ids[np.union1d(near, reach)]
    near = near[~np.isin(near, np.asarray(new_ids, dtype=np.int64))].astype(np.int64)
    arena = idx._store.arena
    # SPFresh tests neighbours against Ao; we test against the centroid of the posting a row
    # is in, which is what "would a new centroid be nearer" means once the old one is gone
    pos, ev = K.split_neighbour_candidates(arena.vecs, arena.rids, arena.vers, idx._vmap,
                                           arena.packed, near, routing.centroids[near],
                                           np.asarray(a1, np.float32), np.asarray(a2, np.float32))
    idx.counters["reassign_evaluated"] += int(ev)
    return arena.rids[pos], arena.vecs[pos], near


def _merge(idx, p: int, vecs, sqn, rids, vers) -> list[int]:
    """Merge small posting p with the nearest posting q whose combined size fits: both retire
    and one posting at their mean takes every valid entry; then rows nearer to another
    centroid now (from the pair, or neighbours the new centroid is nearer to) are reassigned.
    With no partner that fits, p retires and its rows go to their nearest postings."""
    opts = idx.options
    routing = idx._routing
    if len(rids) == 0:            # nothing to move: just stop routing to p
        idx._routing, _ = routing.with_changes([p], np.zeros((0, idx.dim), np.float32))
        idx._store.retire(p)
        _forget(idx, p)
        idx.counters["merges"] += 1
        return []
    ids = routing.live_ids
    d = routing.live_scores(routing.centroids[p][None, :], False)[0]
    d[ids == p] = np.inf
    kk = min(MERGE_NEIGHBOURS, len(d))
    cand = np.argpartition(d, kk - 1)[:kk]
    cand = cand[np.argsort(d[cand], kind="stable")]
    limit = MERGE_FILL * opts.max_posting
    for j in cand:
        if not np.isfinite(d[j]):
            break
        q = int(ids[j])
        if idx._plive[q] + len(rids) > limit:     # valid entries >= live primaries: no fit
            continue
        qv, qs, qr, qvers, _ = _valid_entries(idx, q)
        if len(qr) + len(rids) <= limit:
            return _merge_pair(idx, p, int(q), np.concatenate([vecs, qv]),
                               np.concatenate([sqn, qs]), np.concatenate([rids, qr]),
                               np.concatenate([vers, qvers]))
    # no partner fits (58% of merges on the drift benchmark): each row goes to its nearest
    # posting among p's ReassignK nearest (a full pass over every centroid was 0.28 s of 4.4)
    mine = idx._primary[rids] == p
    exclude = np.array([p], dtype=np.int64)
    kk = min(opts.reassign_k + 1, len(d))
    among = ids[np.argpartition(d, kk - 1)[:kk]]
    more = _reassign(idx, rids[mine], vecs[mine], only_if_moved=False, exclude=exclude,
                     among=among)
    idx._routing, _ = idx._routing.with_changes([p], np.zeros((0, idx.dim), np.float32))
    idx._store.retire(p)
    _forget(idx, p)
    idx.counters["merges"] += 1
    return more


def _merge_pair(idx, p: int, q: int, vecs, sqn, rids, vers) -> list[int]:
    opts = idx.options
    rids, first = np.unique(rids, return_index=True)     # a row with copies in both: once
    vecs, sqn, vers = vecs[first], sqn[first], vers[first]
    c = vecs.astype(np.float64).mean(axis=0).astype(np.float32)
    new_routing, (r,) = idx._routing.with_changes([p, q], c[None, :])
    r = int(r)
    store = idx._store
    store.create(r, vecs, sqn, rids, vers)
    prim = np.isin(idx._primary[rids], (p, q))
    idx._set_primary(rids[prim], np.full(int(prim.sum()), r, dtype=np.int64))
    idx._routing = new_routing                     # publish: p and q retired, r routed
    idx._widen_radius(np.full(len(rids), r, dtype=np.int64), vecs)
    store.retire(p)
    store.retire(q)
    _forget(idx, p)
    _forget(idx, q)
    idx.counters["merges"] += 1
    # only the pair's rows are re-checked: the centroid moves by n_p / (n_p + n_q) of the gap
    # towards a posting of <= merge_threshold rows, so few neighbour rows could prefer it, and
    # scanning ReassignK neighbours for them cost 40% of a merge with no recall to show for it
    # (bench/drift.py, synth200k: recall within 0.002 of the scanning variant at every step)
    idx.counters["reassign_evaluated"] += len(rids)
    ids = new_routing.live_ids
    d = new_routing.live_scores(c[None, :], False)[0]
    kk = min(opts.reassign_k, len(ids))
    more = _reassign(idx, rids, vecs, only_if_moved=True, among=ids[np.argpartition(d, kk - 1)[:kk]])
    if store.length(r) > opts.max_posting or idx._plive[r] <= opts.merge_threshold:
        more.append(r)
    return more


def _reassign(idx, rids: np.ndarray, vecs: np.ndarray, only_if_moved: bool,
              exclude: np.ndarray | None = None, among: np.ndarray | None = None) -> list[int]:
    """Recompute the postings of rows (among the slots `among` if given: the neighbourhood
    of a split or merge, where a candidate's nearest centroid lies; a full pass over every
    centroid per job was 30% of rebalancing at synth200k and grows with the index); rows
    whose nearest posting changed get a new version and fresh copies (older copies turn
    stale). Returns postings now over the split limit or drained under the merge threshold."""
    if len(rids) == 0:
        return []
    opts = idx.options
    assign = idx._routing.assign(vecs, opts.eps1, opts.replicas, exclude=exclude, among=among)
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
    return [p for p in touched if idx._store.length(p) > split_limit(idx, p)] + drained.tolist()


def _maybe_compact_arena(idx) -> None:
    """Rewrite the arena without garbage (retired slices, dead and stale copies)."""
    store = idx._store
    if store.tail < ARENA_MIN_ROWS:
        return
    nearly_full = store.tail > ARENA_FULL_FRACTION * store.capacity
    if store.garbage < (ARENA_GARBAGE_FULL if nearly_full else ARENA_GARBAGE_FRACTION) * store.tail:
        return
    arena, vmap = store.arena, idx._vmap
    live = idx._routing.live_ids.astype(np.int64)
    store.compact(live, K.valid_counts(arena.rids, arena.vers, vmap, arena.packed, live), vmap)
    idx.counters["arena_compactions"] += 1
