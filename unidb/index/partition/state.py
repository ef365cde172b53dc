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
"""
from __future__ import annotations

import threading
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
        self.view: View = self.publish()

    def publish(self) -> View:
        """Make the writer's state visible to readers as one consistent snapshot."""
        self.view = View(self.routing, self.vmap.copy(), self.store.snapshot(), self.live)
        return self.view

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
        had = old >= 0
        if had.any():
            np.subtract.at(self.plive, old[had], 1)
        self.primary[rids] = posts
        if len(posts):
            self.ensure_postings(int(posts.max()) + 1)
            np.add.at(self.plive, posts, 1)

    def clear_primary(self, rids: np.ndarray) -> None:
        old = self.primary[rids]
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
