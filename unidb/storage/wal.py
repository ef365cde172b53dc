"""Write-ahead log: one append-only file of checksummed records per table.

File layout (little-endian)::

    header   8s  magic b"UNIDBWAL" | u32 format version | u64 first lsn
    record   u32 payload length | u32 crc32 of (lsn bytes + payload) | u64 lsn | payload

A record is one committed write (a whole batch, or the delete+insert pair of an upsert or
update), so a batch is visible entirely or not at all. The log sequence number (lsn) increases
by one per record across files. Reading stops at a *torn tail* — the last record cut short or
failing its checksum, as a crash mid-append leaves it — which a writer truncates away; a bad
record with more data after it is corruption and raises `CorruptionError` naming file and
offset. See docs/storage.md.
"""
from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from unidb.errors import CorruptionError
from unidb.storage.files import fsync_dir

MAGIC = b"UNIDBWAL"
FORMAT_VERSION = 1
FILE_HEADER = struct.Struct("<8sIQ")
RECORD_HEADER = struct.Struct("<IIQ")
# One record holds one batch; 1 GiB bounds a corrupt length field from making us allocate
# absurd buffers (a 10k x 1024-d float batch is 40 MiB).
MAX_RECORD_BYTES = 1 << 30


@dataclass
class WalRecord:
    lsn: int
    payload: bytes
    offset: int          # where the record starts in its file


class WalWriter:
    """Appends records to one log file; `sync=True` fsyncs each record before returning."""

    def __init__(self, path: Path, first_lsn: int, sync: bool = True, create: bool = False):
        self.path = Path(path)
        self.sync = sync
        self._lock = threading.Lock()
        self._dirty = False
        if create:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            _write_all(fd, FILE_HEADER.pack(MAGIC, FORMAT_VERSION, first_lsn))
            os.fsync(fd)
            os.close(fd)
            fsync_dir(self.path.parent)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.size = os.fstat(self._fd).st_size

    def append(self, lsn: int, payload: bytes) -> None:
        """Append one record; durable on return when the writer is in sync mode."""
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        lsn_bytes = struct.pack("<Q", lsn)
        crc = zlib.crc32(payload, zlib.crc32(lsn_bytes))
        head = RECORD_HEADER.pack(len(payload), crc, lsn)
        with self._lock:
            try:
                # Small records go out in one write; big ones skip the concatenation copy.
                _write_all(self._fd, head + payload if len(payload) < (1 << 20) else head)
                if len(payload) >= (1 << 20):
                    _write_all(self._fd, payload)
                if self.sync:
                    os.fdatasync(self._fd)
            except BaseException:
                # A failed append (disk full, I/O error) must not leave half a record in front
                # of the next one: cut the file back to the last good record.
                try:
                    os.ftruncate(self._fd, self.size)
                except OSError:
                    pass
                raise
            self.size += len(head) + len(payload)
            if not self.sync:
                self._dirty = True

    def flush(self) -> None:
        """fsync pending records (used by async durability's timer and on close)."""
        with self._lock:
            if self._dirty and self._fd >= 0:
                os.fdatasync(self._fd)
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                if self._dirty:
                    os.fdatasync(self._fd)
                os.close(self._fd)
                self._fd = -1


def read_wal(path: Path, repair: bool) -> tuple[int, list[WalRecord]]:
    """Read every complete record of a log; returns (first lsn, records).

    A torn tail is truncated when `repair` (the writer's recovery) and ignored otherwise (a
    read-only process may be looking at a record the writer is still appending).
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < FILE_HEADER.size:
        # The header is written and fsynced before the file is named in a manifest, so a short
        # file can only be a log whose creation was interrupted: it holds no records.
        raise CorruptionError(f"{path}: WAL file is {len(data)} bytes, shorter than its header")
    magic, version, first_lsn = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise CorruptionError(f"{path}: not a unidb WAL file (offset 0: bad magic/version)")
    records = list(_iter_records(path, data, FILE_HEADER.size))
    end = FILE_HEADER.size if not records else \
        records[-1].offset + RECORD_HEADER.size + len(records[-1].payload)
    if end < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    return first_lsn, records


def _iter_records(path: Path, data: bytes, pos: int) -> Iterator[WalRecord]:
    n = len(data)
    expected_lsn = None
    while pos < n:
        if n - pos < RECORD_HEADER.size:
            return                                   # torn tail: header cut short
        length, crc, lsn = RECORD_HEADER.unpack_from(data, pos)
        end = pos + RECORD_HEADER.size + length
        if length > MAX_RECORD_BYTES:
            if _zero_tail(data, pos):
                return                               # torn tail: space allocated, not written
            raise CorruptionError(f"{path}: corrupt WAL record at offset {pos} "
                                  f"(impossible length {length})")
        if end > n:
            return                                   # torn tail: payload cut short
        payload = data[pos + RECORD_HEADER.size:end]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<Q", lsn))) != crc:
            if end == n or _zero_tail(data, pos):
                return                               # torn tail: last record half-persisted
            raise CorruptionError(f"{path}: WAL record at offset {pos} fails its checksum "
                                  f"and is followed by {n - end} more bytes; the log is "
                                  f"corrupt (restore from a backup)")
        if expected_lsn is not None and lsn != expected_lsn:
            raise CorruptionError(f"{path}: WAL record at offset {pos} has lsn {lsn}, "
                                  f"expected {expected_lsn}")
        expected_lsn = lsn + 1
        yield WalRecord(lsn, payload, pos)
        pos = end


def _zero_tail(data: bytes, pos: int) -> bool:
    """True when everything from `pos` on is zero bytes: a file extended but never written."""
    return data.count(0, pos) == len(data) - pos


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
