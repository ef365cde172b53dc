"""One table on disk: WAL + in-memory rows + segments + tombstones + manifest, and recovery.

Write path, in steps that the table's owner (`unidb/engine/table.py`) calls in order while it
holds the write lock it gave this store: `log()` assigns row ids and appends one WAL record
(fsynced in `sync` mode) — the commit point; `apply()` adds the record to the in-memory table
and tombstones and returns the new `TableState` without showing it to readers; the owner feeds
its indexes; `publish()` makes the state the one readers get; `after_write()` runs the
automatic checkpoint. The store never calls back into its owner. When the in-memory rows pass
`memtable_flush_bytes` (`StorageOptions`) they are flushed to an immutable segment and a
checkpoint manifest names the new set of files (docs/storage.md has the whole life cycle).
Recovery = manifest + replay of the WAL records past the checkpoint.

Failures: a write is the WAL append. If the append fails the write raises `StorageError` and
is not applied; once it is appended the write has happened, and a checkpoint or compaction
that fails afterwards is not the write's failure — it is logged, reported by `health()`, and
retried (docs/storage.md, "What a failed write means").
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from pyroaring import BitMap, FrozenBitMap

from unidb.errors import (ClosedError, CorruptionError, LimitError, ReadOnlyError,
                          StorageError, UnidbError)
from unidb.storage import files
from unidb.storage.manifest import (Manifest, manifest_in_place, manifest_path, read_manifest,
                                    write_manifest)
from unidb.options import DEFAULT, StorageOptions
from unidb.storage.parts import ROWID, Part, TableState
from unidb.storage.records import Commit, decode_commit, encode_commit
from unidb.storage.segment import read_segment, write_segment
from unidb.storage.wal import WalWriter, read_wal

log = logging.getLogger("unidb.storage")

# The tunables (flush size, chunk rows, compaction thresholds, the async fsync timer, the
# retry delay after a failed checkpoint) are `StorageOptions` (unidb/options.py), one value per
# store, given by its owner: connect(..., options=...).
# Row ids live in 32-bit roaring bitmaps (tombstones, filters).
MAX_ROWID = 2**32 - 2
# A read-only process retries its load when the writer swaps files under it.
READ_RETRIES = 20
DURABILITY_MODES = ("sync", "async")


class Logged(NamedTuple):
    """One write appended to the log: its record number and what it holds (the inserted rows
    carry their new `_rowid`s)."""
    lsn: int
    commit: Commit


class TableStore:
    """Durable storage of one table. Thread-safe: one writer at a time, readers lock-free.

    `lock` serialises every change of the table: the write steps, checkpoints, the compaction
    swap, a reader's refresh. The table engine passes its write lock in, so that its whole
    write (log, apply, index feed, publish) excludes checkpoints and compaction swaps; a store
    opened without one makes its own."""

    def __init__(self, folder: Path, read_only: bool, durability: str,
                 lock: threading.RLock | None = None, options: StorageOptions | None = None):
        if durability not in DURABILITY_MODES:
            raise UnidbError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        self.folder = Path(folder)
        self.read_only = read_only
        self.durability = durability
        self.options = options if options is not None else DEFAULT.storage
        self._lock = lock if lock is not None else threading.RLock()
        self._compact_lock = threading.Lock()    # one compaction at a time
        self._wal: WalWriter | None = None
        self._closed = False
        self._manifest: Manifest | None = None
        self._segment_parts: list[Part] = []
        self._mem_parts: list[Part] = []
        self._mem_bytes = 0
        self._tomb = BitMap()
        self._tomb_version = 0
        self._next_rowid = 0
        self._lsn = 0
        self._live_rows = 0
        self._state: TableState | None = None
        self._wal_seen: tuple[str, int] = ("", 0)
        self._manifest_stat: tuple | None = None
        self._deleted_since_wake = False         # a write tombstoned rows: wake compaction
        self._apply_error: UnidbError | None = None   # a logged write failed to apply
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        # The last failure of each kind of background work (None once it succeeds again).
        self.checkpoint_error: UnidbError | None = None
        self.compaction_error: UnidbError | None = None
        self._retry_at = 0.0

    # -- life cycle ------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, schema_json: dict, durability: str = "sync",
               options: StorageOptions | None = None) -> "TableStore":
        """Create the files of a new, empty table in `folder` (which must be new and empty)."""
        store = cls(folder, read_only=False, durability=durability, options=options)
        files.ensure_dir(folder)
        m = Manifest(schema=schema_json)
        m.wal = m.new_name("wal", ".log")
        WalWriter(store.folder / m.wal, first_lsn=1, create=True).close()
        write_manifest(store.folder, m)
        store._load_checked(repair=True)
        store._start_worker()
        return store

    @classmethod
    def open(cls, folder: Path, read_only: bool = False, durability: str = "sync",
             lock: threading.RLock | None = None, options: StorageOptions | None = None
             ) -> "TableStore":
        """Open (and recover) the table in `folder`; `lock` is its owner's write lock."""
        store = cls(folder, read_only=read_only, durability=durability, lock=lock,
                    options=options)
        if read_only:
            store._load_retrying()
        else:
            store._load_checked(repair=True)
            store._start_worker()
        return store

    def close(self) -> None:
        """Checkpoint in-memory rows (writer), stop background work, release files.

        If the checkpoint fails the files are still released and `StorageError` is raised;
        the rows are safe in the WAL and are replayed at the next open."""
        if self._closed:
            return
        self._stop_worker()
        with self._lock:
            failure = None
            try:
                # After a failed apply the in-memory rows are not the log's: keep the log.
                if not self.read_only and self._mem_parts and self._apply_error is None:
                    self._flush_locked()
            except StorageError as e:
                failure = e
            finally:
                self._closed = True
                if self._wal is not None:
                    try:
                        self._wal.close()
                    except StorageError as e:
                        failure = failure or e
            if failure is not None:
                raise StorageError(failure.errno, f"table {self.folder.name} closed without its "
                                                  f"final checkpoint ({failure}); its rows are "
                                                  f"in the WAL and are replayed at the next "
                                                  f"open") from None

    def abandon(self) -> None:
        """Stop without checkpointing (what a crash looks like; used by tests)."""
        self._stop_worker()
        self._closed = True
        if self._wal is not None:
            try:
                self._wal.close()
            except StorageError:
                pass                             # as after a crash: the WAL holds what synced

    @property
    def schema_json(self) -> dict:
        assert self._manifest is not None
        return self._manifest.schema

    @property
    def manifest(self) -> Manifest:
        assert self._manifest is not None
        return self._manifest

    @property
    def state(self) -> TableState:
        """The latest committed state (refreshed from disk first in read-only mode)."""
        if self.read_only and not self._closed:
            self.refresh()
        assert self._state is not None
        return self._state

    # -- loading and recovery --------------------------------------------------------------
    def _load(self, repair: bool) -> None:
        m = read_manifest(self.folder)
        if repair:
            self._remove_orphans(m)
        segment_parts = [Part(read_segment(self.folder / s), segment=s) for s in m.segments]
        tomb = BitMap()
        if m.tombstones:
            path = self.folder / m.tombstones
            try:
                tomb = BitMap.deserialize(files.read_bytes(path))
            except (ValueError, OverflowError) as e:
                raise CorruptionError(f"{path}: undecodable tombstone bitmap: {e}") from None
        self._manifest = m
        self._segment_parts = segment_parts
        self._mem_parts, self._mem_bytes = [], 0
        self._tomb = tomb
        self._tomb_version += 1
        self._next_rowid = m.next_rowid
        self._lsn = m.checkpoint_lsn
        # A compaction may have dropped rows whose ids are still in the bitmap: count only
        # tombstones that hit a stored row.
        self._live_rows = sum(int(self._live_mask_now(p).sum()) for p in segment_parts)
        self._replay_wal(repair)
        self._manifest_stat = _stat_key(manifest_path(self.folder))
        if not self.read_only:
            self._wal = WalWriter(self.folder / m.wal, first_lsn=self._lsn + 1,
                                  sync=self.durability == "sync")
        self._publish()

    def _load_checked(self, repair: bool) -> None:
        """`_load`, reporting a file the manifest names but the folder lacks as corruption."""
        try:
            self._load(repair)
        except FileNotFoundError as e:
            raise CorruptionError(f"{e.filename or self.folder}: a file of table "
                                  f"{self.folder.name} is missing (named by its manifest); "
                                  f"restore from a backup") from None

    def _load_retrying(self) -> None:
        for attempt in range(READ_RETRIES):
            try:
                self._load(repair=False)
                return
            except (FileNotFoundError, CorruptionError):
                # The writer replaced files (or is mid-rename) while we read: read again. A
                # damage that persists is reported by the last attempt below.
                time.sleep(0.01 * (attempt + 1))
        self._load_checked(repair=False)

    def _replay_wal(self, repair: bool) -> None:
        m = self._manifest
        path = self.folder / m.wal
        first_lsn, records = read_wal(path, repair=repair)
        if first_lsn != m.checkpoint_lsn + 1:
            # Each checkpoint starts a new log at the next lsn, so they always agree.
            raise CorruptionError(f"{path}: log starts at lsn {first_lsn} but the manifest's "
                                  f"checkpoint is lsn {m.checkpoint_lsn}; the manifest or the "
                                  f"log is corrupt")
        for rec in records:
            if rec.lsn <= self._lsn:
                continue
            if rec.lsn != self._lsn + 1:
                raise CorruptionError(f"{path}: record at offset {rec.offset} has lsn "
                                      f"{rec.lsn}, expected {self._lsn + 1}")
            commit = decode_commit(rec.payload, f"{path} offset {rec.offset}")
            self._apply(rec.lsn, commit)
        self._wal_seen = (m.wal, records[-1].end if records else 0)

    def _remove_orphans(self, m: Manifest) -> None:
        """Delete files an interrupted flush or compaction left behind."""
        files.remove_stale_temps(self.folder)
        live = set(m.segments) | {m.wal} | ({m.tombstones} if m.tombstones else set())
        removed = False
        for p in self.folder.iterdir():
            if p.is_file() and p.name.startswith(("seg-", "wal-", "tomb-")) and p.name not in live:
                files.remove_file(p, sync_dir=False)
                removed = True
        if removed:
            files.fsync_dir(self.folder)

    def refresh(self) -> None:
        """Read-only handles: pick up what the writer process committed since the last look."""
        with self._lock:
            try:
                key = _stat_key(manifest_path(self.folder))
            except FileNotFoundError:
                return
            if key != self._manifest_stat:
                self._load_retrying()
                return
            wal_name, seen = self._wal_seen
            try:
                size = os.stat(self.folder / wal_name).st_size
            except FileNotFoundError:
                self._load_retrying()
                return
            if size > seen:
                before = self._lsn
                try:
                    self._replay_wal(repair=False)
                except FileNotFoundError:
                    self._load_retrying()
                    return
                if self._lsn != before:
                    self._publish()

    # -- writes: the steps the owner calls, in order, holding the write lock --------------
    def log(self, deletes: np.ndarray | None, batch: pa.RecordBatch | None) -> Logged | None:
        """Step 1, the commit point: give `batch` its row ids and append one WAL record that
        tombstones `deletes` and inserts `batch` (fsynced in `sync` mode). None when the write
        is empty. Raises (`StorageError`, `LimitError`, `ClosedError`) having changed nothing."""
        self._require_write_lock()
        self._check_writable()
        deletes = np.unique(np.asarray(deletes if deletes is not None else [], dtype=np.int64))
        if batch is not None and batch.num_rows:
            n = batch.num_rows
            if self._next_rowid + n > MAX_ROWID:
                raise LimitError(f"table {self.folder.name} would exceed {MAX_ROWID} row ids")
            ids = pa.array(np.arange(self._next_rowid, self._next_rowid + n, dtype=np.int64))
            batch = batch.append_column(ROWID, ids)
        else:
            batch = None
        if batch is None and not len(deletes):
            return None
        commit = Commit(deletes, batch)
        lsn = self._lsn + 1
        self._wal.append(lsn, encode_commit(commit))   # raises StorageError: nothing was logged
        return Logged(lsn, commit)

    def apply(self, logged: Logged) -> TableState:
        """Step 2: apply a record `log()` just appended to the in-memory rows and tombstones;
        returns the state that holds it. Readers keep getting the previous state until
        `publish()`, so the owner can bring its indexes up to this one first."""
        self._require_write_lock()
        if logged.lsn != self._lsn + 1:
            raise UnidbError(f"table {self.folder.name}: record {logged.lsn} applied out of "
                             f"order (last applied: {self._lsn})")
        try:
            self._apply(logged.lsn, logged.commit)
        except Exception as e:
            # The record is in the log but the in-memory table may hold part of it: another
            # write would log after a state that is not the log's. Refuse writes; a reopen
            # replays the log and so holds the write.
            self._apply_error = UnidbError(
                f"table {self.folder.name}: write {logged.lsn} is in the log but applying it "
                f"in memory failed ({type(e).__name__}: {e}); the table refuses writes until "
                f"it is reopened, which replays it")
            self._stop = True                    # nor may compaction publish that table
            self._wake.set()
            raise self._apply_error from e
        if len(logged.commit.deletes):
            self._deleted_since_wake = True
        return self._make_state()

    def publish(self, state: TableState) -> None:
        """Step 3: make `state` (from `apply()`) the one readers get."""
        self._require_write_lock()
        self._state = state

    def after_write(self) -> TableState | None:
        """Step 4, housekeeping a published write triggers: the automatic checkpoint once the
        in-memory rows pass `options.memtable_flush_bytes` (a failure is logged, kept in
        `health()` and retried later: never the write's failure), else a compaction wake-up
        after deletes.
        Returns the checkpointed state when a checkpoint was made (the owner saves its
        indexes then), else None."""
        self._require_write_lock()
        if self._mem_bytes >= self.options.memtable_flush_bytes:
            return self._auto_checkpoint()
        if self._deleted_since_wake:
            self._deleted_since_wake = False
            self._wake.set()
        return None

    def _require_write_lock(self) -> None:
        # The steps of a write touch shared state and must not interleave with another
        # write, a checkpoint or a compaction swap: the owner holds the lock across all of them.
        if not self._lock._is_owned():
            raise RuntimeError(f"table {self.folder.name}: a write step was called without "
                               f"holding the table's write lock")

    def _auto_checkpoint(self) -> TableState | None:
        """The checkpoint a write triggers: a failure is recorded and retried later, never the
        write's failure (it is already in the log). Returns the checkpointed state, if made."""
        if time.monotonic() < self._retry_at:
            return None
        try:
            self._flush_locked()
        except UnidbError as e:
            log.warning("checkpoint of %s failed (retried in %.0f s): %s", self.folder,
                        self.options.retry_after_failure_seconds, e)
            self.checkpoint_error = e
            self._retry_at = time.monotonic() + self.options.retry_after_failure_seconds
            return None
        return self._state

    def _apply(self, lsn: int, commit: Commit) -> None:
        if len(commit.deletes):
            fresh_bm = BitMap(commit.deletes.astype(np.uint32))
            fresh_bm.difference_update(self._tomb)
            fresh = np.frombuffer(fresh_bm.to_array(), dtype=np.uint32).astype(np.int64)
            # Only rows still stored count: a replayed delete may name rows that a compaction
            # has already dropped from the segments.
            self._live_rows -= int(self._stored(fresh).sum())
            self._tomb.update(commit.deletes.astype(np.uint32))
            self._tomb_version += 1
        if commit.batch is not None:
            self._append_mem(commit.batch)
            ids = commit.batch.column(ROWID)
            self._next_rowid = int(ids[len(ids) - 1].as_py()) + 1
            self._live_rows += commit.batch.num_rows
        self._lsn = lsn

    def _append_mem(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([batch])
        last = self._mem_parts[-1] if self._mem_parts else None
        if last is not None and last.num_rows + batch.num_rows <= self.options.memtable_chunk_rows:
            merged = pa.concat_tables([last.table, table]).combine_chunks()
            self._mem_parts[-1] = Part(merged)
        else:
            self._mem_parts.append(Part(table.combine_chunks()))
        self._mem_bytes += batch.nbytes

    def _make_state(self) -> TableState:
        return TableState(parts=tuple(self._segment_parts + self._mem_parts),
                          tombstones=FrozenBitMap(self._tomb), tomb_version=self._tomb_version,
                          next_rowid=self._next_rowid, lsn=self._lsn, live_rows=self._live_rows)

    def _publish(self) -> None:
        self._state = self._make_state()

    def _check_writable(self) -> None:
        if self._closed:
            raise ClosedError(f"table at {self.folder} is closed")
        if self.read_only:
            raise ReadOnlyError(f"table {self.folder.name} was opened read-only")
        if self._apply_error is not None:
            raise self._apply_error

    def health(self) -> dict:
        """What background work last failed, if anything (cleared when it next succeeds)."""
        wal_broken = self._wal.broken if self._wal is not None else None
        return {"checkpoint_error": _describe(self.checkpoint_error),
                "compaction_error": _describe(self.compaction_error),
                "wal_error": _describe(wal_broken),
                "apply_error": _describe(self._apply_error),
                "writable": not (self.read_only or self._closed or wal_broken is not None
                                 or self._apply_error is not None)}

    # -- checkpoint (flush) ----------------------------------------------------------------
    def flush(self) -> TableState | None:
        """Write in-memory rows to a segment and checkpoint (a no-op when nothing was written
        since the last checkpoint). Returns the checkpointed state, or None when a no-op."""
        self._check_writable()
        with self._lock:
            if self._lsn == self._manifest.checkpoint_lsn:
                return None
            self._flush_locked()
            return self._state

    def _flush_locked(self) -> None:
        """Checkpoint: new segment + tombstones + empty log, then swap the manifest.

        New files are made first; the manifest rename is the commit point. A failure before
        it deletes the new files and leaves the table as it was; a failure after it (the
        folder fsync) keeps the new manifest and the old files (removed at the next open)."""
        old = self._manifest
        new = old.copy()
        made: list[str] = []
        new_wal = None
        try:
            new_parts = list(self._segment_parts)
            if self._mem_parts:
                seg = new.new_name("seg", ".arrow")
                made.append(seg)
                write_segment(self.folder / seg, pa.concat_tables([p.table for p in self._mem_parts]))
                new.segments.append(seg)
                new_parts.append(Part(read_segment(self.folder / seg), segment=seg))
            if len(self._tomb):
                new.tombstones = new.new_name("tomb", ".roaring")
                made.append(new.tombstones)
                self._tomb.run_optimize()
                files.atomic_write_bytes(self.folder / new.tombstones, self._tomb.serialize())
            else:
                new.tombstones = None
            new.wal = new.new_name("wal", ".log")
            made.append(new.wal)
            new_wal = WalWriter(self.folder / new.wal, first_lsn=self._lsn + 1,
                                sync=self.durability == "sync", create=True)
            new.checkpoint_lsn = self._lsn
            new.next_rowid = self._next_rowid
            synced = self._swap_manifest(new)
        except StorageError:
            if new_wal is not None:
                new_wal.close()
            for name in made:
                _remove_quietly(self.folder / name)
            raise
        self._adopt_checkpoint(old, new_wal, new_parts, remove_old=synced)

    def _adopt_checkpoint(self, old: Manifest, new_wal: WalWriter, new_parts: list[Part],
                          remove_old: bool) -> None:
        """Switch to the checkpoint whose manifest `_swap_manifest` put in place of `old`."""
        new = self._manifest
        try:
            self._wal.close()
        except StorageError:
            pass                                 # its records are in the new segment now
        self._wal = new_wal
        self._segment_parts = new_parts
        self._mem_parts, self._mem_bytes = [], 0
        self._wal_seen = (new.wal, 0)
        self.checkpoint_error = None
        self._retry_at = 0.0
        self._publish()
        if remove_old:
            # Garbage now; if deleting fails, the next open removes them as orphans.
            _remove_quietly(self.folder / old.wal)
            if old.tombstones and old.tombstones != new.tombstones:
                _remove_quietly(self.folder / old.tombstones)
        self._wake.set()                         # maybe compaction has work now

    def set_index_definitions(self, indexes: dict) -> None:
        """Record index definitions in the manifest (durable on return)."""
        self._check_writable()
        with self._lock:
            new = self._manifest.copy()
            new.indexes = dict(indexes)
            self._swap_manifest(new)

    def _swap_manifest(self, new: Manifest) -> bool:
        """Replace the manifest with `new` and adopt it (under the write lock). Raises, adopting
        nothing, if it did not get into place; returns False when it is in place but its folder
        could not be synced (files it supersedes must then stay until the next open)."""
        try:
            write_manifest(self.folder, new)
            synced = True
        except StorageError:
            if not manifest_in_place(self.folder, new):
                raise
            log.warning("manifest of %s replaced but its folder could not be synced; files it "
                        "supersedes are kept until the next open", self.folder)
            synced = False
        self._manifest = new
        self._manifest_stat = _stat_key(manifest_path(self.folder))
        return synced

    # -- compaction ------------------------------------------------------------------------
    def compaction_plan(self) -> list[list[Part]]:
        """Groups of adjacent segments worth rewriting: mostly-dead ones, runs of small ones."""
        state = self._state
        groups: list[list[Part]] = []
        run: list[Part] = []
        run_bytes = 0
        opts = self.options

        def close_run():
            nonlocal run, run_bytes
            if len(run) > 1 or (run and self._dead_ratio(state, run[0]) >= opts.compact_dead_ratio):
                groups.append(run)
            run, run_bytes = [], 0

        for part in self._segment_parts:
            size = part.table.nbytes
            dead = self._dead_ratio(state, part)
            small = size < opts.small_bytes
            if (small or dead >= opts.compact_dead_ratio) and run_bytes + size <= opts.target_bytes:
                run.append(part)
                run_bytes += size * (1 - dead)
            else:
                close_run()
                if small or dead >= opts.compact_dead_ratio:
                    run.append(part)
                    run_bytes = size * (1 - dead)
        close_run()
        return groups

    @staticmethod
    def _dead_ratio(state: TableState, part: Part) -> float:
        if not part.num_rows:
            return 1.0
        return 1.0 - float(state.live_mask(part).sum()) / part.num_rows

    def compact(self) -> int:
        """Rewrite segments per `compaction_plan`; returns the number of groups rewritten."""
        self._check_writable()
        done = 0
        with self._compact_lock:
            for group in self.compaction_plan():
                self._compact_group(group)
                done += 1
            self.compaction_error = None
        return done

    def _compact_group(self, group: list[Part]) -> None:
        state = self._state
        pieces = []
        for part in group:
            mask = state.live_mask(part)
            pieces.append(part.table.filter(pa.array(mask)) if not mask.all() else part.table)
        table = pa.concat_tables(pieces)
        with self._lock:
            seg = None
            if table.num_rows:
                # The name is reserved in the live manifest so no later file reuses it.
                seg = self._manifest.new_name("seg", ".arrow")
        # The long part (reading and writing rows) runs without the write lock: segments are
        # immutable and tombstones added meanwhile still apply to the same row ids.
        new_part = None
        try:
            if seg is not None:
                write_segment(self.folder / seg, table)
                new_part = Part(read_segment(self.folder / seg), segment=seg)
            with self._lock:
                names = [p.segment for p in group]
                new = self._manifest.copy()
                if any(n not in new.segments for n in names):  # pragma: no cover - one compactor
                    if seg is not None:
                        _remove_quietly(self.folder / seg)
                    return
                i = new.segments.index(names[0])
                new.segments[i:i + len(names)] = [seg] if seg else []
                synced = self._swap_manifest(new)
                j = self._segment_parts.index(group[0])
                self._segment_parts[j:j + len(group)] = [new_part] if new_part else []
                self._publish()
        except StorageError:
            if seg is not None:
                _remove_quietly(self.folder / seg)
            raise
        if not synced:
            return      # the old manifest may come back after a power loss: keep its segments
        for n in names:
            _remove_quietly(self.folder / n)
        try:
            files.fsync_dir(self.folder)
        except StorageError:
            pass                                 # old segments are orphans either way

    # -- background worker -----------------------------------------------------------------
    def _start_worker(self) -> None:
        self._stop = False
        self._worker = threading.Thread(target=self._work, name=f"unidb-{self.folder.name}",
                                        daemon=True)
        self._worker.start()
        self._wake.set()                         # look for compaction work left from before

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._stop = True
            self._wake.set()
            self._worker.join()
            self._worker = None

    def _work(self) -> None:
        timeout = self.options.async_fsync_seconds if self.durability == "async" else None
        while not self._stop:
            self._wake.wait(timeout if self.compaction_error is None
                            else min(timeout or self.options.retry_after_failure_seconds,
                                     self.options.retry_after_failure_seconds))
            self._wake.clear()
            if self._stop:
                return
            try:
                if self._wal is not None and self.durability == "async":
                    self._wal.flush()
                if time.monotonic() < self._retry_at:
                    continue
                with self._compact_lock:
                    for group in self.compaction_plan():
                        if self._stop:
                            break
                        self._compact_group(group)
                    self.compaction_error = None
            except UnidbError as e:
                # Background work is optional (no write depends on it): remember, retry later.
                log.warning("background compaction of %s failed (retried in %.0f s): %s",
                            self.folder, self.options.retry_after_failure_seconds, e)
                self.compaction_error = e
                self._retry_at = time.monotonic() + self.options.retry_after_failure_seconds

    # -- helpers ---------------------------------------------------------------------------
    def _live_mask_now(self, part: Part) -> np.ndarray:
        mask = np.ones(part.num_rows, dtype=bool)
        if len(self._tomb) and part.num_rows and \
                self._tomb.range_cardinality(part.min_rowid, part.max_rowid + 1):
            dead = np.frombuffer(self._tomb.to_array(), dtype=np.uint32).astype(np.int64)
            found, offsets = part.locate(dead)
            mask[offsets] = False
        return mask

    def _stored(self, row_ids: np.ndarray) -> np.ndarray:
        """Whether each row id is present in a segment or the in-memory table."""
        out = np.zeros(len(row_ids), dtype=bool)
        if len(row_ids):
            for part in self._segment_parts + self._mem_parts:
                if part.num_rows and row_ids.max() >= part.min_rowid \
                        and row_ids.min() <= part.max_rowid:
                    out |= part.locate(row_ids)[0]
        return out

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())


def _remove_quietly(path: Path) -> None:
    """Delete a file that is garbage either way (an orphan is removed at the next open)."""
    try:
        files.remove_file(path, sync_dir=False)
    except StorageError as e:
        log.warning("could not delete %s: %s", path, e)


def _describe(e: BaseException | None) -> str | None:
    return None if e is None else f"{type(e).__name__}: {e}"


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)
