"""The built-in posting stores (contract: store.py) and the registry of store kinds.

`ArenaStore` keeps every posting as a contiguous slice of one `Arena` (vectors float32,
squared norms, row ids, versions); `packed[p] = offset << LEN_BITS | length` publishes the
live prefix of posting p in one word.

Concurrency (ALGORITHMS.md §3, Python specifics): one writer at a time (the index's mutex);
readers take no lock. Entries are immutable once written. An append writes the entries past
the published length, then publishes the new length; a posting that outgrows its slice is
copied to the arena tail before its new offset is published; an arena that is full is copied
into a bigger one published as a new `Arena` object. A reader holding an old `Arena` keeps a
consistent view: nothing it can reach is ever overwritten. `snapshot()` copies the slice table
(writers update it in place).

`MemoryPostingStore` ("memory") allocates arenas with numpy; `DiskPostingStore` ("disk") with
memory-mapped files in the index folder (working files, not snapshots: persistence writes its
own files).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from unidb.index.partition.quantize import QUANTIZATIONS, SQ8, QuantizedArena
from unidb.index.partition.store import WORK_PREFIX, Arena, PostingStore
from unidb.kernels.partition import LEN_BITS, LEN_MASK, copy_valid

MIN_SLICE = 16          # smallest slice given to a posting: avoids a relocation per tiny append
SLICE_GROWTH = 1.5      # a relocated posting gets 1.5x the space it needs: amortised O(1) appends
ARENA_GROWTH = 2.0      # a full arena is copied into one 2x larger (plus what is needed)
ARENA_SLACK = 1.25      # a rebuilt arena (build, load) keeps 25% free rows for appends...
# ...and a compacted one (only ever under churn) twice its rows: with 1.25 the next few splits
# filled it and it was copied into a 2x arena right after the compaction (bench/drift.py)
COMPACT_SLACK = 2.0
# The whole arena is rewritten when more than this fraction of its rows is garbage...
ARENA_GARBAGE_FRACTION = 0.5
ARENA_MIN_ROWS = 1 << 16
# ...or more than this fraction once the arena is this full: compacting writes only the valid
# rows into fresh memory, where growing would copy every row, garbage included (first touch
# of fresh pages ran at 0.4-0.8 GB/s on the benchmark VM: one growth cost 0.2-0.35 s)
ARENA_FULL_FRACTION = 0.85
ARENA_GARBAGE_FULL = 0.25


class ArenaStore(PostingStore):
    """Postings in one arena; subclasses say where its arrays live (`_alloc`).

    With `quantization="sq8"` the arena is a `QuantizedArena` (quantize.py): every entry also
    carries its uint8 codes and error bound, written and moved with the other columns. The
    codes always live in process memory (they are what the first pass of a search reads; the
    disk store leaves the full vectors to the page cache)."""

    quantizes = True

    def __init__(self, dim: int, folder=None, quantization: str | None = None):
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        self.dim = dim
        self.quantization = quantization
        self.sq = SQ8.untrained(dim) if quantization else None
        self.trained = False
        self.tail = 0            # first unused arena row
        self.garbage = 0         # arena rows no longer reachable from a live posting slice
        self.arena = self._new_arena(1024, 64)

    @staticmethod
    def _check_length(length: int) -> None:
        if length > LEN_MASK:
            # a posting of copies of one vector is never split (lire.py), so this is how
            # many copies of one vector the index can hold
            raise ValueError(f"a posting would hold {length} entries, over the "
                             f"{LEN_MASK}-entry limit of the slice table")

    # -- allocation hooks (memory vs disk) ------------------------------------------------
    def _alloc(self, name: str, shape, dtype) -> np.ndarray:
        raise NotImplementedError

    def _new_arena(self, rows: int, slots: int) -> Arena:
        cols = (self._alloc("vecs", (rows, self.dim), np.float32),
                self._alloc("sqn", (rows,), np.float32),
                self._alloc("rids", (rows,), np.int64),
                self._alloc("vers", (rows,), np.uint8),
                np.zeros(slots, dtype=np.int64), np.zeros(slots, dtype=np.int64))
        if self.sq is None:
            return Arena(*cols)
        return QuantizedArena(*cols, np.zeros((rows, self.dim), np.uint8),
                              np.zeros(rows, np.float32), self.sq)

    def _train_once(self, vecs: np.ndarray) -> None:
        """An index that starts empty trains its quantizer on the first rows written."""
        if self.sq is not None and not self.trained and len(vecs):
            self.sq = SQ8.train(vecs)
            self.trained = True
            self.arena = dataclasses.replace(self.arena, sq=self.sq)   # holds no rows yet

    def _write(self, a: Arena, s: int, vecs, sqn, rids, vers) -> None:
        """Entries into rows s.. of arena a (codes encoded when quantized)."""
        n = len(rids)
        a.vecs[s:s + n] = vecs
        a.sqn[s:s + n] = sqn
        a.rids[s:s + n] = rids
        a.vers[s:s + n] = vers
        if self.sq is not None:
            a.codes[s:s + n], a.cerr[s:s + n] = self.sq.encode(vecs)

    def _copy_rows(self, src: Arena, s: int, dst: Arena, d: int, n: int) -> None:
        """Rows s..s+n of src to rows d..d+n of dst, every column."""
        dst.vecs[d:d + n] = src.vecs[s:s + n]
        dst.sqn[d:d + n] = src.sqn[s:s + n]
        dst.rids[d:d + n] = src.rids[s:s + n]
        dst.vers[d:d + n] = src.vers[s:s + n]
        if self.sq is not None:
            dst.codes[d:d + n] = src.codes[s:s + n]
            dst.cerr[d:d + n] = src.cerr[s:s + n]

    def _release(self, a: Arena) -> None:
        """An arena replaced by a bigger one (readers may still hold it)."""

    # -- the writer's current state, read through its arena (every derived read of
    # PostingView runs on `gather`, which here is the whole arena: no copy) ----------------
    def lengths(self, posts):
        return self.arena.lengths(posts)

    def length(self, p):
        return self.arena.length(p)

    def read(self, p):
        return self.arena.read(p)

    def gather(self, posts):
        return self.arena

    def search_one(self, q, mode, nav, vmap, m, eps2, prune, kk, k, finish):
        return self.arena.search_one(q, mode, nav, vmap, m, eps2, prune, kk, k, finish)

    def snapshot(self) -> Arena:
        a = self.arena
        return dataclasses.replace(a, packed=a.packed.copy())

    def stats(self) -> dict:
        a = self.arena
        codes = a.codes.nbytes + a.cerr.nbytes if self.sq is not None else 0
        return {"rows": int(self.tail), "garbage_rows": int(self.garbage),
                "bytes": int(a.vecs.nbytes + a.sqn.nbytes + a.rids.nbytes + a.vers.nbytes
                             + a.packed.nbytes + a.caps.nbytes + codes)}

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
            self.arena = dataclasses.replace(a, packed=packed, caps=caps)   # publish
            return
        rows = len(a.rids)
        if self.tail + rows_needed > rows:
            rows = int(max(rows * ARENA_GROWTH, self.tail + rows_needed) + 1024)
        slots = len(a.packed)
        if slots_needed > slots:
            slots = int(max(slots * 2, slots_needed))
        b = self._new_arena(rows, slots)
        self._copy_rows(a, 0, b, 0, self.tail)
        b.packed[:len(a.packed)] = a.packed
        b.caps[:len(a.caps)] = a.caps
        self.arena = b            # publish
        self._release(a)

    def reserve(self, n_postings: int) -> None:
        self._ensure(0, n_postings)

    def append(self, p, vecs, sqn, rids, vers) -> None:
        """Append entries to posting p (creating it if new), then publish the new length."""
        n = len(rids)
        if n == 0:
            return
        self._train_once(vecs)
        self._ensure(0, p + 1)
        a = self.arena
        off, ln = a.posting_range(p)
        self._check_length(ln + n)
        cap = int(a.caps[p])
        if ln + n > cap:
            newcap = max(MIN_SLICE, int((ln + n) * SLICE_GROWTH))
            self._ensure(newcap, p + 1)
            a = self.arena
            noff = self.tail
            self.tail += newcap
            if ln:
                self._copy_rows(a, off, a, noff, ln)
            self.garbage += cap
            off, cap = noff, newcap
            a.caps[p] = cap
            a.packed[p] = (off << LEN_BITS) | ln       # same entries, new place
        self._write(a, off + ln, vecs, sqn, rids, vers)
        a.packed[p] = (off << LEN_BITS) | (ln + n)      # publish

    def replace(self, p, vecs, sqn, rids, vers) -> None:
        """Write posting p afresh at the arena tail with room to grow; its old slice (if
        any) becomes garbage."""
        n = len(rids)
        self._check_length(n)
        self._train_once(vecs)
        cap = max(MIN_SLICE, int(n * SLICE_GROWTH))
        self._ensure(cap, p + 1)
        a = self.arena
        self.garbage += int(a.caps[p])          # rewriting p: its old slice becomes garbage
        off = self.tail
        self.tail += cap
        self._write(a, off, vecs, sqn, rids, vers)
        a.caps[p] = cap
        a.packed[p] = (off << LEN_BITS) | n

    def retire(self, p) -> None:
        """Posting p's slice becomes garbage (readers may still read it)."""
        self.garbage += int(self.arena.caps[p])
        self.arena.caps[p] = 0

    def bulk_load(self, lens, vecs, sqn, rids, vers) -> None:
        """Postings 0..len(lens)-1 laid out back to back, each with room to grow."""
        P = len(lens)
        self._check_length(int(lens.max()) if P else 0)
        caps = np.maximum(MIN_SLICE, (lens * SLICE_GROWTH).astype(np.int64))
        offs = np.concatenate([[0], np.cumsum(caps)[:-1]]).astype(np.int64)
        total = int(caps.sum())
        old = self.arena
        if self.sq is not None and len(rids):
            self.sq = SQ8.train(vecs)       # build and load: trained on every row
            self.trained = True
        b = self._new_arena(int(total * ARENA_SLACK) + 1024, max(64, P * 2))
        src = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        # destination index of each source row
        dst = np.repeat(offs - src[:-1], lens) + np.arange(int(src[-1]))
        b.vecs[dst] = vecs
        b.sqn[dst] = sqn
        b.rids[dst] = rids
        b.vers[dst] = vers
        if self.sq is not None:
            b.codes[dst], b.cerr[dst] = self.sq.encode(vecs)
        b.caps[:P] = caps
        b.packed[:P] = (offs << LEN_BITS) | lens.astype(np.int64)
        self.tail = total
        self.garbage = 0
        self.arena = b
        self._release(old)

    def collect_garbage(self, live, vmap) -> bool:
        """Rewrite the arena without garbage (retired slices, dead and stale copies) once
        garbage is over ARENA_GARBAGE_FRACTION of the rows (ARENA_GARBAGE_FULL when the arena
        is nearly full). Readers holding the old arena keep it."""
        if self.tail < ARENA_MIN_ROWS:
            return False
        nearly_full = self.tail > ARENA_FULL_FRACTION * len(self.arena.rids)
        if self.garbage < (ARENA_GARBAGE_FULL if nearly_full else ARENA_GARBAGE_FRACTION) * self.tail:
            return False
        old = self.arena
        posts = np.asarray(live, dtype=np.int64)
        lens = old.valid_counts(vmap, posts)
        caps = np.maximum(MIN_SLICE, (lens * SLICE_GROWTH).astype(np.int64))
        offs = np.concatenate([[0], np.cumsum(caps)[:-1]]).astype(np.int64)
        total = int(caps.sum())
        b = self._new_arena(int(total * COMPACT_SLACK) + 1024, len(old.packed))
        copy_valid(old.vecs, old.sqn, old.rids, old.vers, vmap, old.packed, posts, offs,
                   b.vecs, b.sqn, b.rids, b.vers)
        if self.sq is not None and lens.sum():
            # retrain on the rows kept: under drift the range trained at build no longer
            # fits, and clipped rows have loose bounds (more re-ranking, same results)
            dst = np.repeat(offs - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
            rows = b.vecs[dst]
            self.sq = SQ8.train(rows)
            b = dataclasses.replace(b, sq=self.sq)
            b.codes[dst], b.cerr[dst] = self.sq.encode(rows)
        b.caps[posts] = caps
        b.packed[posts] = (offs << LEN_BITS) | lens.astype(np.int64)
        self.tail = total
        self.garbage = 0
        self.arena = b
        self._release(old)
        return True


class MemoryPostingStore(ArenaStore):
    """Arena in process memory (nothing to close)."""

    kind = "memory"

    def _alloc(self, name, shape, dtype):
        return np.zeros(shape, dtype=dtype)


class DiskPostingStore(ArenaStore):
    """Arena in memory-mapped working files `postings-work-<n>-<name>.bin` in `folder`.

    The OS pages vectors in and out, so the index can exceed RAM. Working files are scratch:
    snapshots are written separately by `persist.save` and these files are not named by any
    manifest, so a crash leaves only garbage that the next load deletes.
    """

    kind = "disk"

    def __init__(self, dim: int, folder: str | os.PathLike | None,
                 quantization: str | None = None):
        if folder is None:
            raise ValueError("storage='disk' needs a folder for its memory-mapped posting files")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._gen = 0
        self._files: dict[int, list[Path]] = {}
        super().__init__(dim, folder, quantization)

    def _alloc(self, name, shape, dtype):
        path = self.folder / f"{WORK_PREFIX}{os.getpid()}-{id(self)}-{self._gen}-{name}.bin"
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

    def working_files(self) -> set[Path]:
        return {p for ps in self._files.values() for p in ps}

    def close(self) -> None:
        """Delete the working files (readers' mappings stay valid until dropped)."""
        for g in list(self._files):
            for p in self._files.pop(g):
                p.unlink(missing_ok=True)


# -- store kinds ---------------------------------------------------------------------------
STORES: dict[str, type[PostingStore]] = {}


def register_store(cls: type[PostingStore]) -> type[PostingStore]:
    """Make `cls` available as PartitionOptions(storage=cls.kind); returns cls."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} needs a non-empty string `kind` to be registered")
    if STORES.get(kind, cls) is not cls:
        raise ValueError(f"posting store kind {kind!r} is already taken by "
                         f"{STORES[kind].__name__}")
    STORES[kind] = cls
    return cls


def make_store(kind: str, dim: int, folder, quantization: str | None = None) -> PostingStore:
    """A new, empty store of the registered `kind` (with first-pass codes when `quantization`
    is set: only stores whose class says `quantizes = True` take the argument)."""
    if kind not in STORES:
        raise ValueError(f"storage must be one of {sorted(STORES)}, got {kind!r}")
    if quantization is None:
        return STORES[kind](dim, folder)
    if not getattr(STORES[kind], "quantizes", False):
        raise ValueError(f"storage {kind!r} does not support quantization={quantization!r}; "
                         f"use one of {sorted(k for k, c in STORES.items() if getattr(c, 'quantizes', False))}")
    return STORES[kind](dim, folder, quantization=quantization)


register_store(MemoryPostingStore)
register_store(DiskPostingStore)
