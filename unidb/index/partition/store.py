"""The posting-store contract (faiss's InvertedLists role): how a posting is stored, apart
from which partition a row belongs to (routing.py) and from when postings change (lire.py).

A posting is a list of entries (vector float32, squared norm float32, row id int64, version
uint8), identified by its posting id (the routing's centroid slot). An entry is valid when
`vmap[row] == version` (versions.py); stores never interpret versions, they keep them.

Two roles:

* `PostingView`, the read side: one consistent state of every posting. Two methods are
  required, `lengths` and `read`; everything the search paths, LIRE and persistence read
  (valid counts and entries, the batched top-k scan, the one-query search, the exhaustive
  scan, the split-neighbourhood scan, the snapshot files) has a default built on those two:
  the probed postings are gathered into one contiguous `Arena` and the same numba kernels
  run on it, so a store that only implements the two gets results identical to the built-in
  arena's. A store with its own layout (disk blocks, compressed codes) overrides the methods
  whose default would be slow or wrong for it.
* `PostingStore`, the write side, which is also a `PostingView` of the writer's current state
  (LIRE reads through it under the index mutex): append, replace, retire, bulk load, publish
  an immutable view for readers (`snapshot`), reclaim space, stats, persistence, close.

Concurrency contract: one writer at a time (the index mutex); readers take no lock and hold
a view from `snapshot()` for as long as they like. A view must keep answering with the state
it was published with, whatever the writer does afterwards (the built-in arena never
overwrites an entry a published view can reach; a store may also copy).

New stores register a `kind` with `postings.register_store`; `PartitionOptions.storage`
names the kind, and snapshots record it. A store that can keep first-pass codes
(`PartitionOptions.quantization`, quantize.py) says `quantizes = True` and takes
`quantization=` as a constructor keyword; the built-in arena stores do. Scratch files a store keeps in the index folder
are named `WORK_PREFIX...`: persistence deletes those that no open store lists in
`working_files()`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from unidb.kernels import partition as K
from unidb.kernels.partition import LEN_BITS, LEN_MASK
from unidb.storage import files

# (vectors (n, dim) float32, squared norms (n,) float32, row ids (n,) int64, versions (n,) uint8)
Entries = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# Working (scratch) files of a store in the index folder start with this.
WORK_PREFIX = "postings-work-"
# The snapshot arrays of the default `PostingView.save` / `PostingStore.load` format.
SNAPSHOT_ARRAYS = ("lens", "vecs", "sqn", "rids", "vers")


class PostingView(ABC):
    """One consistent state of every posting (see the module docstring)."""

    dim: int

    # -- required --------------------------------------------------------------------------
    @abstractmethod
    def lengths(self, posts: np.ndarray) -> np.ndarray:
        """Stored entries (valid or not) of each posting in `posts` (int64; 0 if absent)."""

    @abstractmethod
    def read(self, p: int) -> Entries:
        """Posting p's stored entries in stored order (read-only; empty if absent)."""

    # -- derived (override for speed or for a layout the defaults cannot read) --------------
    def length(self, p: int) -> int:
        """Stored entries of posting p."""
        return int(self.lengths(np.array([p], dtype=np.int64))[0])

    def gather(self, posts: np.ndarray) -> Arena:
        """The entries of `posts` copied into one contiguous arena whose slice table is indexed
        by the same posting ids (other ids empty): every default below runs the arena's kernels
        on it. One `read` per distinct posting."""
        uniq = np.unique(np.asarray(posts, dtype=np.int64))
        parts = [self.read(int(p)) for p in uniq]
        lens = np.array([len(e[2]) for e in parts], dtype=np.int64)
        offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        packed = np.zeros(int(uniq.max()) + 1 if len(uniq) else 0, dtype=np.int64)
        packed[uniq] = (offs << LEN_BITS) | lens

        def cat(i, shape, dtype):
            return np.ascontiguousarray(np.concatenate([e[i] for e in parts]), dtype=dtype) \
                if parts else np.zeros(shape, dtype)
        return Arena(cat(0, (0, self.dim), np.float32), cat(1, 0, np.float32),
                     cat(2, 0, np.int64), cat(3, 0, np.uint8), packed, lens.copy())

    def valid_counts(self, vmap: np.ndarray, posts: np.ndarray) -> np.ndarray:
        """Valid entries of each posting in `posts`."""
        return self.gather(posts).valid_counts(vmap, posts)

    def valid_entries(self, vmap: np.ndarray, posts: np.ndarray) -> tuple[np.ndarray, ...]:
        """Copies of the valid entries of `posts`, posting after posting in stored order:
        (vecs, sqn, rids, vers, valid count per posting)."""
        return self.gather(posts).valid_entries(vmap, posts)

    def scan_all(self, q: np.ndarray, mode: int, vmap: np.ndarray, posts: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Every valid entry of `posts` with its exact float64 score (squared L2 or -dot),
        posting after posting; replicas are not deduplicated."""
        return self.gather(posts).scan_all(q, mode, vmap, posts)

    def topk(self, queries: np.ndarray, qnorms: np.ndarray, mode: int, vmap: np.ndarray,
             posts: np.ndarray, qidx: np.ndarray, kk: int, k: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched search over (query qidx[t], posting posts[t]) pairs sorted by posting: a
        float32 scan keeping the kk best distinct valid rows per query, then their exact
        float64 re-rank. Returns (ids (nq, k) -1 padded, scores (nq, k) +inf padded, sorted by
        (score, row id); worst (nq,): the largest float32 score of a full heap, +inf if it
        never filled, for the caller's near-tie check)."""
        return self.gather(posts).topk(queries, qnorms, mode, vmap, posts, qidx, kk, k)

    def search_one(self, q: np.ndarray, mode: int, nav: tuple, vmap: np.ndarray, m: int,
                   eps2: float, prune: bool, kk: int, k: int, finish: int) -> tuple:
        """One query end to end, as `kernels.partition.search_one` returns it; `nav` is the
        view's `Routing.nav_arrays()`. The default navigates, gathers the probed postings and
        scans them with the same kernel the fused arena path runs."""
        posts, qn, ok = K.probe_one(q, mode, m, eps2, prune, *nav)
        if not ok:
            return (np.full((1, k), -1, dtype=np.int64), np.full((1, k), np.inf), -1, np.inf)
        return self.gather(posts).search_probed(q, qn, mode, vmap, posts, kk, k, finish)

    def neighbour_candidates(self, vmap: np.ndarray, posts: np.ndarray, post_cents: np.ndarray,
                             a1: np.ndarray, a2: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, int]:
        """LIRE's split-neighbourhood scan: valid entries of posting posts[t] (centroid
        post_cents[t]) that new centroid a1 or a2 is nearer to than post_cents[t].
        Returns (row ids, vectors, valid entries evaluated)."""
        return self.gather(posts).neighbour_candidates(vmap, posts, post_cents, a1, a2)

    def save(self, folder: Path, prefix: str, vmap: np.ndarray, posts: np.ndarray
             ) -> dict[str, str]:
        """Write the valid entries of `posts` (which become postings 0..len-1) as snapshot
        files named `prefix...` in `folder`; returns {key: file name} for the manifest. The
        default format (SNAPSHOT_ARRAYS as checksummed .npy) is what `PostingStore.load`
        reads by default."""
        vecs, sqn, rids, vers, lens = self.valid_entries(vmap, posts)
        names = {}
        for key, arr in zip(SNAPSHOT_ARRAYS, (lens, vecs, sqn, rids, vers)):
            names[key] = f"{prefix}{key}.npy"
            files.write_npy(folder / names[key], arr)
        return names


class PostingStore(PostingView):
    """The write side of a posting store; reading it reads the writer's current state.

    Every method is called by the one writer holding the index mutex. Constructor:
    `cls(dim, folder)` (`folder`: the index folder, or None for an index without one)."""

    kind: ClassVar[str]          # the name PartitionOptions.storage uses (register_store)

    @abstractmethod
    def append(self, p: int, vecs: np.ndarray, sqn: np.ndarray, rids: np.ndarray,
               vers: np.ndarray) -> None:
        """Append entries to posting p (creating it if new)."""

    @abstractmethod
    def replace(self, p: int, vecs: np.ndarray, sqn: np.ndarray, rids: np.ndarray,
                vers: np.ndarray) -> None:
        """Posting p holds exactly these entries from now on (new or rewritten: split halves,
        a merged pair, a compacted posting)."""

    @abstractmethod
    def retire(self, p: int) -> None:
        """Posting p is no longer routed to: its space may be reclaimed, but views published
        before still read it."""

    @abstractmethod
    def bulk_load(self, lens: np.ndarray, vecs: np.ndarray, sqn: np.ndarray, rids: np.ndarray,
                  vers: np.ndarray) -> None:
        """Replace everything with postings 0..len(lens)-1 holding the given entries back to
        back (lens[p] of them each): build and load."""

    @abstractmethod
    def snapshot(self) -> PostingView:
        """An immutable view of the current state for readers (published by the index)."""

    @abstractmethod
    def stats(self) -> dict:
        """{"rows": entries stored, garbage included; "garbage_rows": stored entries no
        routed posting reaches; "bytes": bytes of the store's arrays, in memory or mapped}."""

    # -- optional ---------------------------------------------------------------------------
    def reserve(self, n_postings: int) -> None:
        """Hint: posting ids below n_postings are about to be written."""

    def collect_garbage(self, live: np.ndarray, vmap: np.ndarray) -> bool:
        """Reclaim space held by retired postings and invalid entries if the store's policy
        says it is time (`live`: the routed posting ids). True if it did."""
        return False

    def working_files(self) -> set[Path]:
        """Scratch files (named WORK_PREFIX...) this store uses now: not garbage."""
        return set()

    def load(self, folder: Path, names: dict[str, str]) -> None:
        """Replace everything with the postings a view's `save` wrote (`names` as returned)."""
        arr = {k: files.read_npy(folder / names[k], mmap=True) for k in SNAPSHOT_ARRAYS}
        self.bulk_load(np.asarray(arr["lens"], dtype=np.int64), arr["vecs"], arr["sqn"],
                       arr["rids"], arr["vers"])

    def close(self) -> None:
        """Release what the store holds (files, mappings); a store of plain memory has
        nothing to release. Idempotent."""


@dataclass
class Arena(PostingView):
    """Postings as contiguous slices of one set of arrays: the layout the numba kernels scan
    (kernels/partition.py). `packed[p] = offset << LEN_BITS | length` publishes the live
    prefix of posting p in one word; `caps[p]` is its slice capacity (writer side only).

    The built-in stores keep their postings in an arena (postings.py) and publish it as
    their view; `PostingView.gather` builds one for the defaults above."""
    vecs: np.ndarray     # (cap, dim) float32
    sqn: np.ndarray      # (cap,) float32
    rids: np.ndarray     # (cap,) int64
    vers: np.ndarray     # (cap,) uint8
    packed: np.ndarray   # (posting slots,) int64: offset << LEN_BITS | length
    caps: np.ndarray     # (posting slots,) int64: slice capacity (writer-side only)

    @property
    def dim(self) -> int:
        return self.vecs.shape[1]

    def posting_range(self, p: int) -> tuple[int, int]:
        w = int(self.packed[p]) if p < len(self.packed) else 0
        return w >> LEN_BITS, w & LEN_MASK

    def lengths(self, posts):
        posts = np.asarray(posts, dtype=np.int64)
        inside = posts < len(self.packed)
        out = np.zeros(len(posts), dtype=np.int64)
        out[inside] = self.packed[posts[inside]] & LEN_MASK
        return out

    def length(self, p):
        return self.posting_range(p)[1]

    def read(self, p):
        off, ln = self.posting_range(p)
        return (self.vecs[off:off + ln], self.sqn[off:off + ln], self.rids[off:off + ln],
                self.vers[off:off + ln])

    def gather(self, posts):
        return self

    def valid_counts(self, vmap, posts):
        return K.valid_counts(self.rids, self.vers, vmap, self.packed,
                              np.asarray(posts, dtype=np.int64))

    def valid_entries(self, vmap, posts):
        posts = np.asarray(posts, dtype=np.int64)
        pos = K.valid_positions(self.rids, self.vers, vmap, self.packed, posts)
        lens = np.array([len(pos)], dtype=np.int64) if len(posts) == 1 else \
            self.valid_counts(vmap, posts)
        return self.vecs[pos], self.sqn[pos], self.rids[pos], self.vers[pos], lens

    def scan_all(self, q, mode, vmap, posts):
        return K.scan_all(q, mode, self.vecs, self.rids, self.vers, vmap, self.packed,
                          np.asarray(posts, dtype=np.int64))

    def topk(self, queries, qnorms, mode, vmap, posts, qidx, kk, k):
        hd, hr, hp = K.scan_topk_grouped(queries, qnorms, mode, self.vecs, self.sqn, self.rids,
                                         self.vers, vmap, self.packed, posts, qidx, kk)
        worst = np.where(hr[:, -1] >= 0, hd[:, 0].astype(np.float64), np.inf)   # heap full?
        return (*K.rerank_exact(queries, mode, self.vecs, hr, hp, k), worst)

    def search_one(self, q, mode, nav, vmap, m, eps2, prune, kk, k, finish):
        return K.search_one(q, mode, m, eps2, prune, *nav, self.vecs, self.sqn, self.rids,
                            self.vers, vmap, self.packed, kk, k, finish)

    def search_probed(self, q, qn, mode, vmap, posts, kk, k, finish):
        """`search_one`'s scan over postings already navigated to (`K.probe_one`)."""
        return K.search_probed_one(q, qn, mode, posts, self.vecs, self.sqn, self.rids,
                                   self.vers, vmap, self.packed, kk, k, finish)

    def neighbour_candidates(self, vmap, posts, post_cents, a1, a2):
        pos, ev = K.split_neighbour_candidates(self.vecs, self.rids, self.vers, vmap,
                                               self.packed, np.asarray(posts, dtype=np.int64),
                                               post_cents, np.asarray(a1, np.float32),
                                               np.asarray(a2, np.float32))
        return self.rids[pos], self.vecs[pos], int(ev)
