"""Write-ahead log: one append-only file of checksummed records per table.

File layout (little-endian)::

    header   8s magic b"UNIDBWAL" | u32 format version | u64 first lsn | u32 crc32 of those
    record   u32 payload length | u32 crc32(lsn bytes + payload) | u64 lsn
             | u32 crc32 of the 16 header bytes before it | payload

A record is one committed write (a whole batch, or the delete+insert pair of an upsert or
update), so a batch is visible entirely or not at all. The log sequence number (lsn) increases
by one per record across files.

*Torn tail.* Only the last record can be torn, and only by being incomplete: its header cut
short, its (checksummed, hence genuine) length running past the end of the file, or the file
ending in a stretch of zeros that the file system allocated but never wrote (power loss).
Reading stops there, and a writer truncates it away. Anything else that fails a check — a
header whose checksum fails with written bytes after it, a complete record whose payload fails
its checksum, an lsn out of sequence — is corruption: `CorruptionError` names file and offset,
and no later record is silently dropped. See docs/storage.md.
"""
from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from unidb.errors import CorruptionError, LimitError, StorageError
from unidb.storage.files import AppendFile, read_raw

MAGIC = b"UNIDBWAL"
FORMAT_VERSION = 2
_FILE_FIELDS = struct.Struct("<8sIQ")
FILE_HEADER_SIZE = _FILE_FIELDS.size + 4
_RECORD_FIELDS = struct.Struct("<IIQ")
RECORD_HEADER_SIZE = _RECORD_FIELDS.size + 4
# One record holds one batch; 1 GiB bounds a corrupt length field from making us allocate
# absurd buffers (a 10k x 1024-d float batch is 40 MiB).
MAX_RECORD_BYTES = 1 << 30
# Unwritten file-system blocks read back as zeros; a torn tail of that kind starts at a
# sector boundary (512 bytes is the smallest sector size in use).
SECTOR = 512


@dataclass
class WalRecord:
    lsn: int
    payload: bytes
    offset: int          # where the record starts in its file

    @property
    def end(self) -> int:
        return self.offset + RECORD_HEADER_SIZE + len(self.payload)


def file_header(first_lsn: int) -> bytes:
    fields = _FILE_FIELDS.pack(MAGIC, FORMAT_VERSION, first_lsn)
    return fields + struct.pack("<I", zlib.crc32(fields))


def record_bytes(lsn: int, payload: bytes) -> tuple[bytes, int]:
    """(header, total length) of one record."""
    lsn_bytes = struct.pack("<Q", lsn)
    fields = _RECORD_FIELDS.pack(len(payload), zlib.crc32(payload, zlib.crc32(lsn_bytes)), lsn)
    return fields + struct.pack("<I", zlib.crc32(fields)), RECORD_HEADER_SIZE + len(payload)


class WalWriter:
    """Appends records to one log file; `sync=True` fsyncs each record before returning.

    A failed append is cut back off the file before the error is raised, so the next record
    follows the last good one. If even that fails, the log is *broken*: every later append
    first retries the repair and raises `StorageError` until it succeeds."""

    def __init__(self, path: Path, first_lsn: int, sync: bool = True, create: bool = False):
        self.path = Path(path)
        self.sync = sync
        self._lock = threading.Lock()
        self._dirty = False
        self.broken: StorageError | None = None
        self._file = AppendFile(self.path, create_with=file_header(first_lsn) if create else None)
        self.size = self._file.size

    def append(self, lsn: int, payload: bytes) -> None:
        """Append one record; durable on return when the writer is in sync mode."""
        if len(payload) > MAX_RECORD_BYTES:
            raise LimitError(f"one write of {len(payload)} bytes exceeds the log's record "
                             f"limit of {MAX_RECORD_BYTES} bytes; write smaller batches")
        head, total = record_bytes(lsn, payload)
        with self._lock:
            self._repair_locked()
            try:
                # Small records go out in one write; big ones skip the concatenation copy.
                if len(payload) < (1 << 20):
                    self._file.append(head + payload)
                else:
                    self._file.append(head)
                    self._file.append(payload)
                if self.sync:
                    self._file.sync()
            except StorageError as e:
                # The record may be partly on disk: cut it off before anything follows it.
                try:
                    self._file.truncate(self.size)
                except StorageError as cut:
                    self.broken = cut
                raise e from None
            self.size += total
            if not self.sync:
                self._dirty = True

    def _repair_locked(self) -> None:
        if self.broken is None:
            return
        try:
            self._file.truncate(self.size)
        except StorageError as e:
            raise StorageError(e.errno, f"the write-ahead log {self.path} could not be cut back "
                                        f"after a failed write ({e}); writes are refused until "
                                        f"it can") from None
        self.broken = None

    def flush(self) -> None:
        """fsync pending records (used by async durability's timer and on close)."""
        with self._lock:
            if self._dirty and self._file.fd >= 0:
                self._file.sync()
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            try:
                if self._dirty and self._file.fd >= 0:
                    self._file.sync()
            finally:
                self._file.close()


def read_wal(path: Path, repair: bool) -> tuple[int, list[WalRecord]]:
    """Read every complete record of a log; returns (first lsn, records).

    A torn tail is truncated when `repair` (the writer's recovery) and ignored otherwise (a
    read-only process may be looking at a record the writer is still appending).
    """
    path = Path(path)
    data = read_raw(path)
    if len(data) < FILE_HEADER_SIZE:
        # The header is written and fsynced before the file is named in a manifest.
        raise CorruptionError(f"{path}: WAL file is {len(data)} bytes, shorter than its header")
    magic, version, first_lsn = _FILE_FIELDS.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptionError(f"{path}: not a unidb WAL file (offset 0: bad magic)")
    if version != FORMAT_VERSION:
        raise CorruptionError(f"{path}: WAL format {version} is not {FORMAT_VERSION} (written "
                              f"by another unidb version)")
    (crc,) = struct.unpack_from("<I", data, _FILE_FIELDS.size)
    if crc != zlib.crc32(data[:_FILE_FIELDS.size]):
        raise CorruptionError(f"{path}: WAL file header fails its checksum (offset 0)")
    records = list(_iter_records(path, data, FILE_HEADER_SIZE))
    end = records[-1].end if records else FILE_HEADER_SIZE
    if end < len(data) and repair:
        f = AppendFile(path)
        try:
            f.truncate(end)
        finally:
            f.close()
    return first_lsn, records


def _iter_records(path: Path, data: bytes, pos: int) -> Iterator[WalRecord]:
    n = len(data)
    expected_lsn = None
    while pos < n:
        if n - pos < RECORD_HEADER_SIZE:
            return                                   # torn tail: header cut short
        fields = data[pos:pos + _RECORD_FIELDS.size]
        length, crc, lsn = _RECORD_FIELDS.unpack(fields)
        (head_crc,) = struct.unpack_from("<I", data, pos + _RECORD_FIELDS.size)
        if head_crc != zlib.crc32(fields):
            if _unwritten_tail(data, pos):
                return                               # torn tail: allocated, never written
            raise CorruptionError(f"{path}: WAL record header at offset {pos} fails its "
                                  f"checksum and {n - pos} bytes follow; the log is corrupt "
                                  f"(restore from a backup)")
        end = pos + RECORD_HEADER_SIZE + length
        if length > MAX_RECORD_BYTES:
            raise CorruptionError(f"{path}: WAL record at offset {pos} has impossible length "
                                  f"{length}")
        if end > n:
            return                                   # torn tail: payload cut short
        payload = data[pos + RECORD_HEADER_SIZE:end]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<Q", lsn))) != crc:
            if end == n and _unwritten_tail(data, pos + RECORD_HEADER_SIZE):
                return                               # torn tail: payload never written
            raise CorruptionError(f"{path}: WAL record at offset {pos} (lsn {lsn}) fails its "
                                  f"checksum; the log is corrupt (restore from a backup)")
        if expected_lsn is not None and lsn != expected_lsn:
            raise CorruptionError(f"{path}: WAL record at offset {pos} has lsn {lsn}, "
                                  f"expected {expected_lsn}")
        expected_lsn = lsn + 1
        yield WalRecord(lsn, payload, pos)
        pos = end


def _unwritten_tail(data: bytes, pos: int) -> bool:
    """True when, from `pos` or from a sector boundary after it, the file is zeros to its end."""
    zero_from = len(data.rstrip(b"\0"))          # where the trailing zeros begin
    if zero_from <= pos:
        return True
    return -(-zero_from // SECTOR) * SECTOR < len(data)     # a whole zero sector at the end
