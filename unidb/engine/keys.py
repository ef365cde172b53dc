"""The primary key -> row id map of one table's live rows, kept as compact sorted arrays.

No Python object per row (issue #13): a key is encoded as one 64-bit number — an Int64 key as
itself, a String key as its 64-bit hash (`kernels/hashing.py`) — and each block of rows keeps
its encoded keys sorted, with the offset of each key's row beside it:

- one run per segment (immutable, built once per segment file: 12 bytes a row, or none at all
  when the segment's Int64 keys are already in order — the memory-mapped column is the run);
- a few runs over the in-memory rows (the memtable's delta), extended as writes arrive and
  merged logarithmically (a new run is merged into the one before while it is at least half
  its size), so a write costs O(log n) amortised copies per row and a lookup visits
  O(log n) runs, not one per memtable chunk.

A lookup (`lookup`, vectorised over a batch of keys with `np.searchsorted`) takes every row
whose encoded key matches, drops rows the state's tombstones delete (the map never changes
on a delete: deleted rows stay in the runs until compaction rewrites their segment) and, for
string keys, rows whose stored key differs (a hash collision, checked against the part's own
key column). A table has at most one live row per key, so what remains is the answer.

The map is a function of a `TableState`: the writer and a read-only process (which follows
the writer's state) use it alike, and it never needs to be told about a write.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from unidb.kernels.hashing import hash_strings
from unidb.storage.parts import Part, TableState

# String keys are compared by a hash of this many bits first (then by value). 64 makes a
# collision all but impossible; tests narrow it to force collisions.
STRING_HASH_BITS = 64
# A run over the memtable is merged into the run before it while it holds at least this
# fraction of that run's rows: O(log n) runs, each row copied O(log n) times.
MERGE_FRACTION = 0.5
_CACHE = "pk-run"          # the key of a segment's run in `Part.cache`


class _Run(NamedTuple):
    """Sorted encoded keys of some rows of a block, and the offset of each one's row among
    the block's rows (None: the rows are in key order, so the offset is the index).
    `distinct`: no key appears twice (one binary search per asked key is enough)."""
    keys: np.ndarray
    slots: np.ndarray | None
    distinct: bool


def _run(keys: np.ndarray, slots: np.ndarray | None) -> _Run:
    return _Run(keys, slots, len(keys) < 2 or not bool((keys[1:] == keys[:-1]).any()))


@dataclass(frozen=True)
class _Delta:
    """The runs over the memtable's first `rows` rows (in row-id order, starting at row id
    `first_rowid`; the last of them has row id `last_rowid`)."""
    first_rowid: int
    rows: int
    last_rowid: int
    runs: tuple[_Run, ...]


class _View(NamedTuple):
    """The runs of one state: (parts, offset of each part's first row, runs over them)."""
    blocks: tuple[tuple[tuple[Part, ...], np.ndarray, tuple[_Run, ...]], ...]
    delta: _Delta | None


class KeyMap:
    """Primary key -> row id of every live row of a table state, as sorted arrays."""

    def __init__(self, primary_key: str, string_keys: bool, hash_bits: int | None = None):
        self._pk = primary_key
        self._string = string_keys
        self._bits = STRING_HASH_BITS if hash_bits is None else int(hash_bits)
        self._lock = threading.Lock()       # guards the cached view against a concurrent build
        self._state: TableState | None = None
        self._view: _View | None = None
        self._segments: dict[str, _Run] = {}   # a reader reloads segments as new Part objects

    # -- lookups ---------------------------------------------------------------------------
    def lookup(self, state: TableState, keys: pa.Array) -> np.ndarray:
        """The row id of the live row with each key in `state`, -1 where there is none."""
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        q = self.encode(keys)
        out = np.full(len(q), -1, dtype=np.int64)
        if not len(q):
            return out
        # Sorted needles make each binary search start where the last one ended (numpy's
        # searchsorted uses that): 3-5x faster for large batches than keys in random order.
        order = np.argsort(q, kind="stable") if len(q) > 1 else None
        needles = q[order] if order is not None else q
        found_q, found_ids = [], []
        for parts, starts, runs in self._current(state).blocks:
            for run in runs:
                qi, slots = _candidates(run, needles)
                if not len(qi):
                    continue
                if order is not None:
                    qi = order[qi]
                ids, same = self._rows(parts, starts, slots, keys, qi)
                found_q.append(qi if same is None else qi[same])
                found_ids.append(ids if same is None else ids[same])
        if not found_q:
            return out
        if len(found_q) == 1:
            qi, ids = found_q[0], found_ids[0]
        else:
            qi, ids = np.concatenate(found_q), np.concatenate(found_ids)
        if len(state.tombstones) and len(ids):
            dead = state.tombstones & BitMap(ids.astype(np.uint32))
            if len(dead):
                dead_ids = np.asarray(dead.to_array(), dtype=np.int64)     # sorted
                at = np.minimum(np.searchsorted(dead_ids, ids), len(dead_ids) - 1)
                live = dead_ids[at] != ids
                qi, ids = qi[live], ids[live]
        out[qi] = ids
        return out

    def encode(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Keys as the numbers the runs sort: int64 keys as themselves, strings hashed."""
        if not self._string:
            return np.asarray(keys.to_numpy(zero_copy_only=False), dtype=np.int64)
        chunks = keys.chunks if isinstance(keys, pa.ChunkedArray) else [keys]
        out = np.empty(len(keys), dtype=np.uint64)
        at = 0
        for chunk in chunks:
            n = len(chunk)
            if n:
                _, offsets, data = chunk.buffers()
                wide = pa.types.is_large_string(chunk.type)
                offs = np.frombuffer(offsets, dtype=np.int64 if wide else np.int32,
                                     count=n + 1, offset=chunk.offset * (8 if wide else 4))
                raw = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size \
                    else np.zeros(1, dtype=np.uint8)
                hash_strings(offs, raw, out[at:at + n])
            at += n
        if self._bits < 64:
            out &= np.uint64((1 << self._bits) - 1)
        return out

    def _rows(self, parts: tuple[Part, ...], starts: np.ndarray, slots: np.ndarray,
              keys: pa.Array, qi: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Row ids of the candidate rows at `slots` of the block `parts`, and whether each
        one's stored key is the asked key `keys[qi]` (None: all are, as int64 keys are)."""
        if len(parts) == 1 and not self._string:
            return parts[0].row_ids[slots], None
        if len(parts) == 1:
            which, pos = np.zeros(len(slots), dtype=np.intp), slots
        else:
            which = np.searchsorted(starts, slots, side="right") - 1
            pos = slots - starts[which]
        ids = np.empty(len(slots), dtype=np.int64)
        same = np.ones(len(slots), dtype=bool)
        for p in (np.unique(which) if len(parts) > 1 else (0,)):
            sel = which == p if len(parts) > 1 else slice(None)
            part, at = parts[p], pos[sel]
            ids[sel] = part.row_ids[at]
            if self._string:
                stored = part.table.column(self._pk).take(pa.array(at)).combine_chunks()
                asked = keys.take(pa.array(qi[sel]))
                same[sel] = pc.equal(stored, asked).to_numpy(zero_copy_only=False)
        return ids, same

    # -- the runs of a state ---------------------------------------------------------------
    def _current(self, state: TableState) -> _View:
        with self._lock:
            if self._state is not state:
                self._view = self._build(state, self._view)
                self._state = state
            return self._view

    def _build(self, state: TableState, before: _View | None) -> _View:
        segments = [p for p in state.parts if p.segment is not None]
        mem = tuple(p for p in state.parts if p.segment is None)
        blocks = []
        for part in segments:
            if part.num_rows:
                blocks.append(((part,), np.zeros(1, dtype=np.int64), (self._segment_run(part),)))
        self._segments = {p.segment: p.cache[_CACHE] for p in segments if _CACHE in p.cache}
        delta = None
        if mem:
            delta = self._delta(mem, before.delta if before is not None else None)
            starts = np.cumsum([0] + [p.num_rows for p in mem[:-1]]).astype(np.int64)
            blocks.append((mem, starts, delta.runs))
        return _View(tuple(blocks), delta)

    def _segment_run(self, part: Part) -> _Run:
        run = part.cache.get(_CACHE)
        if run is None:
            run = self._segments.get(part.segment)
            if run is None:
                enc = self.encode(part.table.column(self._pk))
                run = _sorted_run(enc, 0, in_order_ok=True)
            part.cache[_CACHE] = run
        return run

    def _delta(self, mem: tuple[Part, ...], before: _Delta | None) -> _Delta:
        """The runs over the memtable `mem`, extending `before` when it covers a prefix."""
        first = mem[0].min_rowid
        total = sum(p.num_rows for p in mem)
        runs: list[_Run] = []
        done = 0
        if before is not None and before.first_rowid == first and before.rows <= total \
                and _rowid_at(mem, before.rows - 1) == before.last_rowid:
            runs, done = list(before.runs), before.rows
        if done < total:
            enc = self.encode(_column_from(mem, self._pk, done))
            runs.append(_sorted_run(enc, done, in_order_ok=False))
            while len(runs) > 1 and len(runs[-1].keys) >= MERGE_FRACTION * len(runs[-2].keys):
                b = runs.pop()
                runs[-1] = _merge(runs[-1], b)
        return _Delta(first, total, _rowid_at(mem, total - 1), tuple(runs))


def _candidates(run: _Run, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index into q, slot) of every row of `run` whose encoded key equals one of `q`."""
    if not len(run.keys):
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64)
    lo = np.searchsorted(run.keys, q, side="left")
    if run.distinct:                     # at most one row per key: no range to expand
        at = np.minimum(lo, len(run.keys) - 1)
        qi = np.flatnonzero(run.keys[at] == q)
        at = at[qi]
        return qi, (at if run.slots is None else run.slots[at])
    hi = np.searchsorted(run.keys, q, side="right")
    count = hi - lo
    total = int(count.sum())
    if not total:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64)
    qi = np.repeat(np.arange(len(q)), count)
    at = np.arange(total) - np.repeat(np.cumsum(count) - count, count) + lo[qi]
    return qi, (at if run.slots is None else run.slots[at])


def _sorted_run(enc: np.ndarray, first_slot: int, in_order_ok: bool) -> _Run:
    """The run of keys `enc`, the rows at slots first_slot, first_slot + 1, ..."""
    if in_order_ok and first_slot == 0 and (len(enc) < 2 or bool((enc[1:] >= enc[:-1]).all())):
        return _run(enc, None)       # already in key order: keep the (memory-mapped) column
    order = np.argsort(enc, kind="stable")
    slot_type = np.int32 if first_slot + len(enc) < 2**31 else np.int64
    return _run(enc[order], (order + first_slot).astype(slot_type))


def _merge(a: _Run, b: _Run) -> _Run:
    """One run holding the rows of both (slots never overlap: they cover different rows)."""
    at = np.searchsorted(a.keys, b.keys, side="right")
    return _run(np.insert(a.keys, at, b.keys), np.insert(a.slots, at, b.slots))


def _column_from(mem: tuple[Part, ...], column: str, start: int) -> pa.ChunkedArray:
    """Column `column` of the memtable's rows from offset `start` on."""
    pieces = []
    for part in mem:
        if start < part.num_rows:
            pieces.extend(part.table.column(column).slice(start).chunks)
        start = max(0, start - part.num_rows)
    return pa.chunked_array(pieces, type=mem[0].table.schema.field(column).type)


def _rowid_at(mem: tuple[Part, ...], offset: int) -> int:
    """The row id at `offset` among the rows of `mem` (-1 for offset -1)."""
    if offset < 0:
        return -1
    for part in mem:
        if offset < part.num_rows:
            return int(part.row_ids[offset])
        offset -= part.num_rows
    return -1
