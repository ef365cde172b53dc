"""The writer's state of one partition index, shared by the index, LIRE and persistence.

`PartitionState` is the small internal interface PartitionIndex hands to the rebalancer
(lire.py) and to persist.py: routing, posting store, version map and the per-row / per-posting
bookkeeping, as named attributes and methods. Nothing else of the index is reachable from
them. Every read and change happens under `mutex` (one writer at a time); a writer ends its
operation with `publish()`, which makes one immutable `View` for readers.

Readers never lock: they take `state.view` once and see a consistent snapshot for as long as
they like. The view's posting view never changes (store.py's contract) and holds its own copy
of the version map, so every row live in the view is found under the view's versions even
while splits move rows (a reader pairing an old routing with the live version map missed rows
reassigned into new postings).

Writers go through `writing()`: the operation is published as a whole when it returns, and
rolled back to the last published view when it raises, so a half-finished add, delete or LIRE
job (an exception after a split set the rows' primaries to its new postings, before it
published them) is never what the next write builds on, publishes or saves. The per-row
primary postings are not part of the view (a copy per publish would cost 8 bytes per row id
per LIRE job); `published_primary()` gives them as of the last publish, from the changes
journalled since. The writer changes `primary` in place: a save takes that copy under the
mutex (a save that kept a slice of the live array and read it after releasing the mutex paired
the view with primaries the rebalancer had meanwhile pointed at postings the view did not
have: IndexError, or rows saved with no primary).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from unidb.index.partition import versions as V
from unidb.index.partition.options import PartitionOptions
from unidb.index.partition.routing import Routing
from unidb.index.partition.store import PostingStore, PostingView

# Counters kept by LIRE (reported by PartitionIndex.stats; rebalance_cpu_s is reported as
# rebalancer_cpu_seconds).
COUNTERS = ("splits", "merges", "compactions", "reassign_evaluated", "vectors_moved",
            "rebalance_cpu_s", "arena_compactions", "unsplittable")


class IndexStateError(RuntimeError):
    """The writer state could not be rolled back after a failed write: the index takes no
    more writes (its last published view still answers searches and saves)."""


@dataclass(frozen=True)
class View:
    """What readers see: one consistent snapshot, replaced as a whole by writers."""
    routing: Routing
    vmap: np.ndarray
    postings: PostingView
    live: int


class PartitionState:
    """Routing + posting store + version map + bookkeeping of one index (caller holds mutex)."""

    def __init__(self, dim: int, options: PartitionOptions, store: PostingStore):
        self.dim = dim
        self.options = options
        self.store = store
        self.routing = Routing(np.zeros((0, dim), np.float32), np.zeros(0, np.float32),
                               np.zeros(0, bool))
        self.vmap = V.new_map(0)
        self.primary = np.full(0, -1, dtype=np.int64)   # row id -> posting of its primary copy
        self.plive = np.zeros(0, dtype=np.int64)        # posting -> live primaries (merge trigger)
        # posting -> max distance of any entry ever appended to its centroid: a split's new
        # centroid can only attract rows of postings it is within 2 x radius of (lire.py)
        self.radius = np.zeros(0, dtype=np.float64)
        # posting -> entries it may hold before another split attempt, for postings LIRE found
        # unsplittable (duplicates, lire._keep_unsplittable); in memory only: after a load
        # each such posting is tried once more, then marked again
        self.unsplittable: dict[int, int] = {}
        self.live = 0
        # largest squared norm ever stored (never lowered): bounds the float32 rounding of
        # scan scores, so searches know when a near tie needs an exact pass (index.py)
        self.max_sqn = 0.0
        self.counters: dict = {c: 0.0 if c.endswith("_s") else 0 for c in COUNTERS}
        self.mutex = threading.RLock()
        # (row ids, their primaries before) of every primary change since the last publish:
        # undone in reverse, they give the published primaries (published_primary)
        self._undo: list[tuple[np.ndarray, np.ndarray]] = []
        self._writing = False
        self.failed: BaseException | None = None     # a rollback failed: no more writes
        self.view: View = self.publish()

    def publish(self) -> View:
        """Make the writer's state visible to readers as one consistent snapshot."""
        self.view = View(self.routing, self.vmap.copy(), self.store.snapshot(), self.live)
        self._undo.clear()
        self._counted = dict(self.counters)
        return self.view

    @contextmanager
    def writing(self) -> Iterator[PartitionState]:
        """One write operation (add, delete, a LIRE job) under the mutex: published when it
        returns; rolled back to the last published view when it raises (the exception goes
        on). If the rollback fails too, the state is marked `failed` and refuses writes."""
        with self.mutex:
            if self.failed is not None:
                raise IndexStateError("a failed write left this index unusable for writes "
                                      f"({type(self.failed).__name__}: {self.failed})"
                                      ) from self.failed
            if self._writing:
                raise RuntimeError("write operations do not nest")
            self._writing = True
            try:
                yield self
            except BaseException:
                try:
                    self.rollback()
                except BaseException as e:
                    self.failed = e
                raise
            else:
                self.publish()
            finally:
                self._writing = False

    def published_primary(self) -> np.ndarray:
        """A copy of the primary postings as of the last publish (caller holds mutex): what
        pairs with `view` (the writer's array runs ahead of it and changes in place)."""
        primary = self.primary.copy()
        for rids, old in reversed(self._undo):
            primary[rids] = old
        return primary

    def rollback(self) -> None:
        """Return the writer state to the last published view (caller holds mutex): routing,
        version map, primaries, live count, counters, and the postings, rebuilt from the
        view's valid entries (slots keep their ids; entries a failed job appended are dropped,
        so none of them turns valid again when its row's version comes round). Costs a copy
        of the index: only failures pay it."""
        view = self.view
        routing = view.routing
        primary = self.published_primary()
        live = routing.live_ids.astype(np.int64)
        vecs, sqn, rids, vers, lens = view.postings.valid_entries(view.vmap, live)
        full = np.zeros(routing.n_slots, dtype=np.int64)
        full[live] = lens
        self.store.bulk_load(full, vecs, sqn, rids, vers)
        self.routing = routing
        self.vmap = view.vmap.copy()
        self.primary = primary
        self.live = view.live
        self.ensure_postings(routing.n_slots)
        self.plive = np.bincount(primary[primary >= 0], minlength=len(self.plive)
                                 ).astype(np.int64)
        self.radius[routing.n_slots:] = 0.0          # ids the failed job took are handed out again
        for p in [p for p in self.unsplittable if p >= routing.n_slots or not routing.alive[p]]:
            del self.unsplittable[p]
        cpu = self.counters["rebalance_cpu_s"]           # spent all the same
        self.counters.update(self._counted)              # the same dict as the index's
        self.counters["rebalance_cpu_s"] = cpu
        self._undo.clear()

    # ------------------------------------------------------------------ row bookkeeping
    def note_norms(self, sqn: np.ndarray) -> None:
        """Squared norms of vectors about to be stored (keeps max_sqn)."""
        if len(sqn):
            self.max_sqn = max(self.max_sqn, float(np.max(sqn)))

    def set_primary(self, rids: np.ndarray, posts: np.ndarray) -> None:
        """Record primary postings of rows; keeps per-posting live counts."""
        need = int(rids.max()) + 1 if len(rids) else 0
        if need > len(self.primary):
            grow = np.full(max(need, 2 * len(self.primary)), -1, dtype=np.int64)
            grow[:len(self.primary)] = self.primary
            self.primary = grow
        old = self.primary[rids]
        self._undo.append((rids.copy(), old))
        had = old >= 0
        if had.any():
            np.subtract.at(self.plive, old[had], 1)
        self.primary[rids] = posts
        if len(posts):
            self.ensure_postings(int(posts.max()) + 1)
            np.add.at(self.plive, posts, 1)

    def clear_primary(self, rids: np.ndarray) -> None:
        old = self.primary[rids]
        self._undo.append((rids.copy(), old))
        had = old >= 0
        if had.any():
            np.subtract.at(self.plive, old[had], 1)
        self.primary[rids] = -1

    def ensure_postings(self, n: int) -> None:
        """Per-posting arrays (live primaries, radius) cover posting ids below n."""
        if n > len(self.plive):
            grow = np.zeros(max(n, 2 * len(self.plive)), dtype=np.int64)
            grow[:len(self.plive)] = self.plive
            self.plive = grow
        if n > len(self.radius):
            grow = np.zeros(max(n, 2 * len(self.radius)), dtype=np.float64)
            grow[:len(self.radius)] = self.radius
            self.radius = grow

    def widen_radius(self, posts: np.ndarray, x: np.ndarray) -> None:
        """radius[p] = max(radius[p], |x - c_p|) for (posting, vector) pairs."""
        if len(posts) == 0:
            return
        self.ensure_postings(int(posts.max()) + 1)
        diff = x - self.routing.centroids[posts]
        r = np.sqrt(np.einsum("ij,ij->i", diff, diff).astype(np.float64))
        np.maximum.at(self.radius, posts, r)

    def append_assigned(self, rids, x, sqn, vers, assign) -> list[int]:
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
        self.note_norms(sqn[rows])
        self.store.reserve(int(posts.max()) + 1 if len(posts) else 0)
        self.widen_radius(posts, x[rows])
        for s, e in zip(starts, ends):
            p = int(posts[s])
            r = rows[s:e]
            self.store.append(p, x[r], sqn[r], rids[r], vers[r])
            touched.append(p)
        return touched

    # ------------------------------------------------------------------ posting reads
    def valid_entries(self, p: int) -> tuple:
        """Copies of posting p's valid entries: (vecs, sqn, rids, vers), and its stored length."""
        vecs, sqn, rids, vers, _ = self.store.valid_entries(self.vmap, np.array([p], np.int64))
        return vecs, sqn, rids, vers, self.store.length(p)

    def valid_count(self, p: int) -> int:
        """Valid entries of posting p (one pass over it)."""
        return int(self.store.valid_counts(self.vmap, np.array([p], dtype=np.int64))[0])
