"""How a posting is stored (faiss's InvertedLists role), separate from routing and from LIRE.

A posting store keeps every posting as a contiguous slice of one arena: vectors (float32),
squared norms, row ids, versions. `packed[p] = offset << LEN_BITS | length` publishes the live
prefix of posting p in one word.

Concurrency (ALGORITHMS.md §3, Python specifics): one writer at a time (the index's mutex);
readers take no lock. Entries are immutable once written. An append writes the entries past
the published length, then publishes the new length; a posting that outgrows its slice is
copied to the arena tail before its new offset is published; an arena that is full is copied
into a bigger one published as a new `Arena` object. A reader holding an old `Arena` keeps a
consistent view: nothing it can reach is ever overwritten.

`MemoryPostingStore` allocates arenas with numpy; `DiskPostingStore` with memory-mapped files
in the index folder (working files, not snapshots: persistence writes its own files).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unidb.kernels.partition import LEN_BITS, LEN_MASK

MIN_SLICE = 16          # smallest slice given to a posting: avoids a relocation per tiny append
SLICE_GROWTH = 1.5      # a relocated posting gets 1.5x the space it needs: amortised O(1) appends
ARENA_GROWTH = 2.0      # a full arena is copied into one 2x larger (plus what is needed)
ARENA_SLACK = 1.25      # a rebuilt arena (build, load) keeps 25% free rows for appends...
# ...and a compacted one (only ever under churn) twice its rows: with 1.25 the next few splits
# filled it and it was copied into a 2x arena right after the compaction (bench/drift.py)
COMPACT_SLACK = 2.0


@dataclass
class Arena:
    vecs: np.ndarray     # (cap, dim) float32
    sqn: np.ndarray      # (cap,) float32
    rids: np.ndarray     # (cap,) int64
    vers: np.ndarray     # (cap,) uint8
    packed: np.ndarray   # (posting slots,) int64: offset << LEN_BITS | length
    caps: np.ndarray     # (posting slots,) int64: slice capacity (writer-side only)

    def posting_range(self, p: int) -> tuple[int, int]:
        w = int(self.packed[p])
        return w >> LEN_BITS, w & LEN_MASK


class PostingStore:
    """Posting storage interface used by the index and LIRE."""

    def __init__(self, dim: int):
        self.dim = dim
        self.tail = 0            # first unused arena row
        self.garbage = 0         # arena rows no longer reachable from a live posting slice
        # largest squared norm ever stored (never lowered): bounds the float32 rounding of
        # scan scores, so searches know when a near tie needs an exact pass (index.py)
        self.max_sqn = 0.0
        self.arena = self._new_arena(1024, 64)

    def _note(self, sqn: np.ndarray, length: int) -> None:
        """Bookkeeping of entries about to be written to a posting of `length` entries."""
        if length > LEN_MASK:
            # a posting of copies of one vector is never split (lire.py), so this is how
            # many copies of one vector the index can hold
            raise ValueError(f"a posting would hold {length} entries, over the "
                             f"{LEN_MASK}-entry limit of the slice table")
        if len(sqn):
            self.max_sqn = max(self.max_sqn, float(np.max(sqn)))

    # -- allocation hooks (memory vs disk) ------------------------------------------------
    def _alloc(self, name: str, shape, dtype) -> np.ndarray:
        raise NotImplementedError

    def _new_arena(self, rows: int, slots: int) -> Arena:
        return Arena(self._alloc("vecs", (rows, self.dim), np.float32),
                     self._alloc("sqn", (rows,), np.float32),
                     self._alloc("rids", (rows,), np.int64),
                     self._alloc("vers", (rows,), np.uint8),
                     np.zeros(slots, dtype=np.int64), np.zeros(slots, dtype=np.int64))

    # -- readers --------------------------------------------------------------------------
    @property
    def n_slots(self) -> int:
        return len(self.arena.packed)

    @property
    def capacity(self) -> int:
        """Arena rows allocated (tail <= capacity)."""
        return len(self.arena.rids)

    def length(self, p: int) -> int:
        return int(self.arena.packed[p]) & LEN_MASK

    def read(self, p: int):
        """(vecs, sqn, rids, vers) views of posting p's published prefix."""
        a = self.arena
        off, ln = a.posting_range(p)
        return a.vecs[off:off + ln], a.sqn[off:off + ln], a.rids[off:off + ln], a.vers[off:off + ln]

    # -- writer (caller holds the index mutex) -----------------------------------------------
    def _ensure(self, rows_needed: int, slots_needed: int) -> None:
        a = self.arena
        if self.tail + rows_needed <= len(a.rids) and slots_needed <= len(a.packed):
            return
        if self.tail + rows_needed <= len(a.rids):
            # only the slot table is full: new table, same row arrays (entries past a
            # published length are invisible to readers of the old table)
            slots = int(max(len(a.packed) * 2, slots_needed))
            packed = np.zeros(slots, dtype=np.int64)
            caps = np.zeros(slots, dtype=np.int64)
            packed[:len(a.packed)] = a.packed
            caps[:len(a.caps)] = a.caps
            self.arena = Arena(a.vecs, a.sqn, a.rids, a.vers, packed, caps)   # publish
            return
        rows = len(a.rids)
        if self.tail + rows_needed > rows:
            rows = int(max(rows * ARENA_GROWTH, self.tail + rows_needed) + 1024)
        slots = len(a.packed)
        if slots_needed > slots:
            slots = int(max(slots * 2, slots_needed))
        b = self._new_arena(rows, slots)
        t = self.tail
        b.vecs[:t] = a.vecs[:t]
        b.sqn[:t] = a.sqn[:t]
        b.rids[:t] = a.rids[:t]
        b.vers[:t] = a.vers[:t]
        b.packed[:len(a.packed)] = a.packed
        b.caps[:len(a.caps)] = a.caps
        self.arena = b            # publish
        self._release(a)

    def _release(self, a: Arena) -> None:
        """An arena replaced by a bigger one (readers may still hold it)."""

    def reserve_slots(self, n_slots: int) -> None:
        self._ensure(0, n_slots)

    def append(self, p: int, vecs: np.ndarray, sqn: np.ndarray, rids: np.ndarray,
               vers: np.ndarray) -> None:
        """Append entries to posting p (creating it if new), then publish the new length."""
        n = len(rids)
        if n == 0:
            return
        self._ensure(0, p + 1)
        a = self.arena
        off, ln = a.posting_range(p)
        self._note(sqn, ln + n)
        cap = int(a.caps[p])
        if ln + n > cap:
            newcap = max(MIN_SLICE, int((ln + n) * SLICE_GROWTH))
            self._ensure(newcap, p + 1)
            a = self.arena
            noff = self.tail
            self.tail += newcap
            if ln:
                a.vecs[noff:noff + ln] = a.vecs[off:off + ln]
                a.sqn[noff:noff + ln] = a.sqn[off:off + ln]
                a.rids[noff:noff + ln] = a.rids[off:off + ln]
                a.vers[noff:noff + ln] = a.vers[off:off + ln]
            self.garbage += cap
            off, cap = noff, newcap
            a.caps[p] = cap
            a.packed[p] = (off << LEN_BITS) | ln       # same entries, new place
        s = off + ln
        a.vecs[s:s + n] = vecs
        a.sqn[s:s + n] = sqn
        a.rids[s:s + n] = rids
        a.vers[s:s + n] = vers
        a.packed[p] = (off << LEN_BITS) | (ln + n)      # publish

    def create(self, p: int, vecs, sqn, rids, vers, slack: float = SLICE_GROWTH) -> None:
        """Write a new posting p with room to grow."""
        n = len(rids)
        self._note(sqn, n)
        cap = max(MIN_SLICE, int(n * slack))
        self._ensure(cap, p + 1)
        a = self.arena
        self.garbage += int(a.caps[p])          # rewriting p: its old slice becomes garbage
        off = self.tail
        self.tail += cap
        a.vecs[off:off + n] = vecs
        a.sqn[off:off + n] = sqn
        a.rids[off:off + n] = rids
        a.vers[off:off + n] = vers
        a.caps[p] = cap
        a.packed[p] = (off << LEN_BITS) | n

    def retire(self, p: int) -> None:
        """Posting p is no longer routed to; its slice becomes garbage (readers may still read it)."""
        self.garbage += int(self.arena.caps[p])
        self.arena.caps[p] = 0

    def bulk_load(self, lens: np.ndarray, vecs, sqn, rids, vers, slack: float = SLICE_GROWTH) -> None:
        """Replace everything with postings 0..len(lens)-1 laid out back to back (build/load)."""
        P = len(lens)
        self._note(np.asarray(sqn), int(lens.max()) if P else 0)
        caps = np.maximum(MIN_SLICE, (lens * slack).astype(np.int64))
        offs = np.concatenate([[0], np.cumsum(caps)[:-1]]).astype(np.int64)
        total = int(caps.sum())
        old = self.arena
        b = self._new_arena(int(total * ARENA_SLACK) + 1024, max(64, P * 2))
        src = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        # destination index of each source row
        dst = np.repeat(offs - src[:-1], lens) + np.arange(int(src[-1]))
        b.vecs[dst] = vecs
        b.sqn[dst] = sqn
        b.rids[dst] = rids
        b.vers[dst] = vers
        b.caps[:P] = caps
        b.packed[:P] = (offs << LEN_BITS) | lens.astype(np.int64)
        self.tail = total
        self.garbage = 0
        self.arena = b
        self._release(old)

    def compact(self, posts: np.ndarray, lens: np.ndarray, vmap: np.ndarray,
                slack: float = SLICE_GROWTH) -> None:
        """Rewrite the arena keeping only the valid entries (`lens[t]` of them) of postings
        `posts`, each given room to grow; other slots become empty. Readers holding the old
        arena keep it."""
        from unidb.kernels.partition import copy_valid
        old = self.arena
        caps = np.maximum(MIN_SLICE, (lens * slack).astype(np.int64))
        offs = np.concatenate([[0], np.cumsum(caps)[:-1]]).astype(np.int64)
        total = int(caps.sum())
        b = self._new_arena(int(total * COMPACT_SLACK) + 1024, len(old.packed))
        copy_valid(old.vecs, old.sqn, old.rids, old.vers, vmap, old.packed, posts, offs,
                   b.vecs, b.sqn, b.rids, b.vers)
        b.caps[posts] = caps
        b.packed[posts] = (offs << LEN_BITS) | lens.astype(np.int64)
        self.tail = total
        self.garbage = 0
        self.arena = b
        self._release(old)

    def close(self) -> None:
        """Release resources (files of a disk store)."""


class MemoryPostingStore(PostingStore):
    """Arena in process memory."""

    def _alloc(self, name, shape, dtype):
        return np.zeros(shape, dtype=dtype)


class DiskPostingStore(PostingStore):
    """Arena in memory-mapped working files `postings-work-<n>-<name>.bin` in `folder`.

    The OS pages vectors in and out, so the index can exceed RAM. Working files are scratch:
    snapshots are written separately by `persist.save` and these files are not named by any
    manifest, so a crash leaves only garbage that the next load deletes.
    """

    WORK_PREFIX = "postings-work-"

    def __init__(self, dim: int, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._gen = 0
        self._files: dict[int, list[Path]] = {}
        super().__init__(dim)

    def _alloc(self, name, shape, dtype):
        path = self.folder / f"{self.WORK_PREFIX}{os.getpid()}-{id(self)}-{self._gen}-{name}.bin"
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        with open(path, "wb") as f:
            f.truncate(max(nbytes, 1))
        self._files.setdefault(self._gen, []).append(path)
        if name == "vers":
            self._gen += 1
        return np.memmap(path, dtype=dtype, mode="r+", shape=shape)

    def _release(self, a: Arena) -> None:
        # unlinking is safe while readers still map the file (POSIX keeps it until unmapped)
        for g in sorted(self._files):
            if g < self._gen - 1:
                for p in self._files.pop(g):
                    p.unlink(missing_ok=True)

    def close(self) -> None:
        for g in list(self._files):
            for p in self._files.pop(g):
                p.unlink(missing_ok=True)


def make_store(storage: str, dim: int, folder) -> PostingStore:
    if storage == "memory":
        return MemoryPostingStore(dim)
    if storage == "disk":
        if folder is None:
            raise ValueError("storage='disk' needs a folder for its memory-mapped posting files")
        return DiskPostingStore(dim, folder)
    raise ValueError(f"storage must be 'memory' or 'disk', got {storage!r}")
