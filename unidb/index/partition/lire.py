"""LIRE (SPFresh, ALGORITHMS.md §3): split, merge and reassign, one posting per job.

LIRE works on the index's `PartitionState` (state.py: routing, version map, bookkeeping) and
reads and writes postings only through the posting-store contract (store.py), so any store
drops in without a change here.

A job is "maintain posting p": drop dead and stale copies; if still over the split limit,
split it with balanced 2-means and reassign the vectors the two rules of §3 name; if it holds
<= merge_threshold valid entries, merge it with the nearest posting whose combined size fits
(one new posting at the pair's mean) and reassign the rows the move of the centroid concerns. One job holds the index mutex at a time, so inserts interleave with rebalancing
and queries never wait (they do not lock at all).

A job runs inside `PartitionState.writing()`: published when it completes, rolled back to the
last published view when it raises (the background thread logs the failure and goes on with
the next job), so a half-finished split or merge is never built on, published or saved.

Publication order keeps every live row visible to a concurrent reader at every instant:
new postings are written before the routing snapshot that names them is published; a moved
row's new copies are appended before its version is bumped; a retired posting's arena slice is
never overwritten, so a reader holding the old routing still reads valid (then stale) copies.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import numpy as np

from unidb.index.partition import versions as V
from unidb.index.partition.kmeans import balanced_two_means
from unidb.index.partition.state import PartitionState

log = logging.getLogger("unidb.index.partition")

# A posting whose live primaries fall under this fraction of its stored entries is queued for
# compaction (its dead copies cost scan time on every probe).
GC_LIVE_FRACTION = 0.35
# When a posting's valid entries are under this fraction of its stored length, the maintain
# job rewrites it compacted even if no split or merge is due.
COMPACT_VALID_FRACTION = 0.6
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


def split_limit(st: PartitionState, p: int) -> int:
    """Entries over which posting p is due a split: max_posting, or more for a posting found
    unsplittable (until it has grown by UNSPLITTABLE_REGROW)."""
    return max(st.options.max_posting, st.unsplittable.get(p, 0))


def _forget(st: PartitionState, p: int) -> None:
    """Posting p retires: drop its unsplittable mark (ids are never reused while open)."""
    st.unsplittable.pop(p, None)


class Rebalancer:
    """Job queue + optional background thread owning all splits, merges and version bumps."""

    def __init__(self, state: PartitionState):
        self.state = state
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
            st = self.state
            with st.writing():        # published whole, or rolled back if maintain raises
                more = maintain(st, p)
                st.counters["rebalance_cpu_s"] += time.thread_time() - t0
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
            if p is None:
                continue
            try:
                self._run_one(p)
            except Exception:  # noqa: BLE001 - the state is rolled back; the thread goes on
                log.exception("rebalance job on posting %d failed; the index is back at its "
                              "last published state", p)
                if self.state.failed is not None:        # no write can run any more
                    with self._cv:
                        self._jobs.clear()

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
def maintain(st: PartitionState, p: int) -> list[int]:
    """Bring posting p within limits; returns postings that now need a job of their own."""
    routing = st.routing
    if p >= routing.n_slots or not routing.alive[p]:
        return []
    opts = st.options
    vecs, sqn, rids, vers, stored = st.valid_entries(p)
    n = len(rids)
    more: list[int] = []
    limit = split_limit(st, p)
    if n <= opts.merge_threshold and routing.alive.sum() > 1:
        more = _merge(st, p, vecs, sqn, rids, vers)
    elif n > limit:
        more = _split(st, p, vecs, sqn, rids, vers, stored)
    elif n < stored * COMPACT_VALID_FRACTION or stored > limit:
        st.store.replace(p, vecs, sqn, rids, vers)
        st.counters["compactions"] += 1
    _collect_garbage(st)
    return more


def _split(st: PartitionState, p: int, vecs, sqn, rids, vers, stored: int) -> list[int]:
    opts = st.options
    rng = np.random.default_rng([opts.seed, st.counters["splits"]])
    # rows go to their nearer new centroid unless one side would fall under 30% of them (or
    # to the merge threshold: a side merged away at once would hand its rows back to this
    # posting's successor, which splits them off again); duplicates stay on one side
    cut = balanced_two_means(vecs, rng, min_rows=opts.merge_threshold + 1)
    if cut is None:
        return _keep_unsplittable(st, p, vecs, sqn, rids, vers, stored)
    c2, a = cut
    old = st.routing
    ao = old.centroids[p].copy()
    new_routing, (p1, p2) = old.with_changes([p], c2)
    store = st.store
    for j, pj in ((0, p1), (1, p2)):
        m = a == j
        store.replace(int(pj), vecs[m], sqn[m], rids[m], vers[m])
    # primaries that lived in p now live in p1 / p2
    prim = st.primary[rids] == p
    st.set_primary(rids[prim], np.where(a[prim] == 0, p1, p2).astype(np.int64))
    st.routing = new_routing                       # publish: p retired, p1 and p2 routed
    for j, pj in ((0, p1), (1, p2)):
        st.widen_radius(np.full(int((a == j).sum()), pj, dtype=np.int64), vecs[a == j])
    store.retire(p)
    _forget(st, p)
    st.counters["splits"] += 1

    # reassign candidates (SPFresh's two conditions)
    def sqd(x, c):
        diff = x - c[None, :]
        return np.einsum("ij,ij->i", diff, diff)
    do, d1, d2 = sqd(vecs, ao), sqd(vecs, c2[0]), sqd(vecs, c2[1])
    own = (do <= d1) & (do <= d2)
    nr, nx, near = _neighbour_candidates(st, ao, c2[0], c2[1], (p1, p2))
    cr, cx = _unique_rows([rids[own], nr], [vecs[own], nx])
    st.counters["reassign_evaluated"] += len(rids)
    more = _reassign(st, cr, cx, only_if_moved=True, among=np.concatenate([near, [p1, p2]]))
    drained = [st.plive[int(pj)] <= opts.merge_threshold for pj in (p1, p2)]
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
        st.unsplittable[big] = max(opts.max_posting,
                                     st.valid_count(big) + st.valid_count(small))
        st.counters["unsplittable"] += 1
        return [q for q in more if q != small] + \
            [big] * (store.length(big) > split_limit(st, big))
    return more + [int(pj) for pj in (p1, p2) if store.length(int(pj)) > opts.max_posting
                   or st.plive[int(pj)] <= opts.merge_threshold]


def _mark_unsplittable(st: PartitionState, p: int, entries: int) -> None:
    """No split of posting p before it holds UNSPLITTABLE_REGROW x `entries`."""
    st.unsplittable[p] = max(st.options.max_posting, int(np.ceil(UNSPLITTABLE_REGROW * entries)))
    st.counters["unsplittable"] += 1


def _keep_unsplittable(st: PartitionState, p: int, vecs, sqn, rids, vers, stored: int) -> list[int]:
    """Posting p's rows cannot be separated (copies of one vector, or a split that would leave
    a side too small to stand): keep it as one posting over max_posting and mark it so that no
    job splits it again before it has grown UNSPLITTABLE_REGROW x. Searches stay exact (the
    posting is scanned like any other, only longer); the alternative, cutting it by row id,
    makes postings with equal centroids between which every insert and reassignment picks the
    same one, which fills up and is cut again. Returns no follow-up job: nothing changed."""
    _mark_unsplittable(st, p, len(rids))
    if len(rids) < stored:                           # drop dead / stale copies while here
        st.store.replace(p, vecs, sqn, rids, vers)
        st.counters["compactions"] += 1
    return []


def _unique_rows(rid_parts, vec_parts):
    cr = np.concatenate(rid_parts)
    cx = np.concatenate(vec_parts)
    if len(cr):
        cr, first = np.unique(cr, return_index=True)
        cx = cx[first]
    return cr, cx


def _neighbour_candidates(st: PartitionState, anchor, a1, a2, new_ids):
    """Rows of neighbouring postings that new centroid a1 or a2 is nearer to than their own
    posting's centroid: (row ids, vectors, possibly repeated (replicas); the neighbour slots).

    Neighbours: the ReassignK postings nearest to `anchor` (SPFresh: the old centroid), plus
    every posting within 2 x its radius of a1 or a2 (by the triangle inequality, no other
    posting can hold a row nearer to a1/a2 than to its own centroid); under drift a new
    centroid can sit far from the old one, next to rows parked in distant postings. (Using the
    same bound to prune the nearest ReassignK skipped nothing on synth200k drift: radii are
    maxima over every row ever appended, so all near postings are in reach.)"""
    opts = st.options
    routing = st.routing
    ids = routing.live_ids           # distances over live slots only: retired ones pile up
    cd = routing.live_scores(np.stack([anchor, a1, a2]).astype(np.float32), False)
    kk = min(opts.reassign_k, len(ids))
    near = np.argpartition(cd[0], kk - 1)[:kk]
    st.ensure_postings(routing.n_slots)
    slack = np.sqrt(np.minimum(cd[1], cd[2])) - 2.0 * st.radius[ids]
    reach = np.flatnonzero(slack < 0)
    cap = max(REACH_CAP_FACTOR * opts.reassign_k, REACH_CAP_MIN)
    if len(reach) > cap:
        reach = reach[np.argsort(slack[reach], kind="stable")[:cap]]
    near = ids[np.union1d(near, reach)]
    near = near[~np.isin(near, np.asarray(new_ids, dtype=np.int64))].astype(np.int64)
    # SPFresh tests neighbours against Ao; we test against the centroid of the posting a row
    # is in, which is what "would a new centroid be nearer" means once the old one is gone
    rids, vecs, ev = st.store.neighbour_candidates(st.vmap, near, routing.centroids[near], a1, a2)
    st.counters["reassign_evaluated"] += ev
    return rids, vecs, near


def _merge(st: PartitionState, p: int, vecs, sqn, rids, vers) -> list[int]:
    """Merge small posting p with the nearest posting q whose combined size fits: both retire
    and one posting at their mean takes every valid entry; then rows nearer to another
    centroid now (from the pair, or neighbours the new centroid is nearer to) are reassigned.
    With no partner that fits, p retires and its rows go to their nearest postings."""
    opts = st.options
    routing = st.routing
    if len(rids) == 0:            # nothing to move: just stop routing to p
        st.routing, _ = routing.with_changes([p], np.zeros((0, st.dim), np.float32))
        st.store.retire(p)
        _forget(st, p)
        st.counters["merges"] += 1
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
        if st.plive[q] + len(rids) > limit:     # valid entries >= live primaries: no fit
            continue
        qv, qs, qr, qvers, _ = st.valid_entries(q)
        if len(qr) + len(rids) <= limit:
            return _merge_pair(st, p, int(q), np.concatenate([vecs, qv]),
                               np.concatenate([sqn, qs]), np.concatenate([rids, qr]),
                               np.concatenate([vers, qvers]))
    # no partner fits (58% of merges on the drift benchmark): each row goes to its nearest
    # posting among p's ReassignK nearest (a full pass over every centroid was 0.28 s of 4.4)
    mine = st.primary[rids] == p
    exclude = np.array([p], dtype=np.int64)
    kk = min(opts.reassign_k + 1, len(d))
    among = ids[np.argpartition(d, kk - 1)[:kk]]
    more = _reassign(st, rids[mine], vecs[mine], only_if_moved=False, exclude=exclude,
                     among=among)
    st.routing, _ = st.routing.with_changes([p], np.zeros((0, st.dim), np.float32))
    st.store.retire(p)
    _forget(st, p)
    st.counters["merges"] += 1
    return more


def _merge_pair(st: PartitionState, p: int, q: int, vecs, sqn, rids, vers) -> list[int]:
    opts = st.options
    rids, first = np.unique(rids, return_index=True)     # a row with copies in both: once
    vecs, sqn, vers = vecs[first], sqn[first], vers[first]
    c = vecs.astype(np.float64).mean(axis=0).astype(np.float32)
    new_routing, (r,) = st.routing.with_changes([p, q], c[None, :])
    r = int(r)
    store = st.store
    store.replace(r, vecs, sqn, rids, vers)
    prim = np.isin(st.primary[rids], (p, q))
    st.set_primary(rids[prim], np.full(int(prim.sum()), r, dtype=np.int64))
    st.routing = new_routing                     # publish: p and q retired, r routed
    st.widen_radius(np.full(len(rids), r, dtype=np.int64), vecs)
    store.retire(p)
    store.retire(q)
    _forget(st, p)
    _forget(st, q)
    st.counters["merges"] += 1
    # only the pair's rows are re-checked: the centroid moves by n_p / (n_p + n_q) of the gap
    # towards a posting of <= merge_threshold rows, so few neighbour rows could prefer it, and
    # scanning ReassignK neighbours for them cost 40% of a merge with no recall to show for it
    # (bench/drift.py, synth200k: recall within 0.002 of the scanning variant at every step)
    st.counters["reassign_evaluated"] += len(rids)
    ids = new_routing.live_ids
    d = new_routing.live_scores(c[None, :], False)[0]
    kk = min(opts.reassign_k, len(ids))
    more = _reassign(st, rids, vecs, only_if_moved=True, among=ids[np.argpartition(d, kk - 1)[:kk]])
    if store.length(r) > opts.max_posting or st.plive[r] <= opts.merge_threshold:
        more.append(r)
    return more


def _reassign(st: PartitionState, rids: np.ndarray, vecs: np.ndarray, only_if_moved: bool,
              exclude: np.ndarray | None = None, among: np.ndarray | None = None) -> list[int]:
    """Recompute the postings of rows (among the slots `among` if given: the neighbourhood
    of a split or merge, where a candidate's nearest centroid lies; a full pass over every
    centroid per job was 30% of rebalancing at synth200k and grows with the index); rows
    whose nearest posting changed get a new version and fresh copies (older copies turn
    stale). Returns postings now over the split limit or drained under the merge threshold."""
    if len(rids) == 0:
        return []
    opts = st.options
    assign = st.routing.assign(vecs, opts.eps1, opts.replicas, exclude=exclude, among=among)
    if only_if_moved:
        moved = assign[:, 0] != st.primary[rids]
        rids, vecs, assign = rids[moved], vecs[moved], assign[moved]
        if len(rids) == 0:
            return []
    vers = V.next_versions(st.vmap, rids)
    sqn = np.einsum("ij,ij->i", vecs, vecs).astype(np.float32)
    touched = st.append_assigned(rids, vecs, sqn, vers, assign)
    left = np.unique(st.primary[rids])
    st.set_primary(rids, assign[:, 0])
    st.vmap[rids] = vers                         # publish: old copies become stale
    st.counters["vectors_moved"] += len(rids)
    left = left[left >= 0]
    drained = left[st.plive[left] <= opts.merge_threshold]   # emptied by the move: merge
    return [p for p in touched if st.store.length(p) > split_limit(st, p)] + drained.tolist()


def _collect_garbage(st: PartitionState) -> None:
    """Let the store reclaim retired slices and dead / stale copies (its own policy)."""
    if st.store.collect_garbage(st.routing.live_ids.astype(np.int64), st.vmap):
        st.counters["arena_compactions"] += 1
