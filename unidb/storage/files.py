"""Every file operation unidb makes: crash-safe primitives, checksums, and the fault seam.

*Crash safety.* A replacement follows write-temp, fsync, rename, fsync-folder, so a reader
(or a recovering process) sees either the old file or the new one, never a mix.

*Checksums.* Every file unidb writes is verified when read:
  - binary files (segments, tombstones, index arrays) end with a 16-byte footer
    ``u64 data length | u32 crc32(data) | 4s b"UDB1"``;
  - JSON files (MANIFEST, catalog marker, index manifests, key store) carry a ``"checksum"``
    member: crc32 of the canonical JSON of the rest of the object;
  - the WAL checksums each record itself (storage/wal.py).
A mismatch raises `CorruptionError` naming the file.

*Faults.* Each primitive reports its operation (`open`, `write`, `fsync`, `rename`,
`truncate`, `unlink`, `mkdir`, `read`) to a hook before doing it, so tests can make any of
them fail like a full disk or a dying drive would (`FaultPlan`). An `OSError` from a write-side
operation surfaces as `StorageError` (also an `OSError`) naming the file and operation; a missing
file on read stays `FileNotFoundError` for the caller to judge (a reader racing the writer
retries; a writer missing a file its manifest names reports corruption).
"""
from __future__ import annotations

import errno as errno_mod
import fnmatch
import io
import json
import mmap
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from unidb.errors import CorruptionError, StorageError

TMP_SUFFIX = ".tmp"
FOOTER = struct.Struct("<QI4s")
FOOTER_MAGIC = b"UDB1"
CHECKSUM_KEY = "checksum"

# -- the fault seam ------------------------------------------------------------------------
OPS = ("open", "write", "fsync", "rename", "truncate", "unlink", "mkdir", "read")
_hook: Callable[[str, str], None] | None = None


def _io(op: str, path: str | os.PathLike) -> None:
    """Announce an operation on `path`; an installed fault plan may raise OSError here."""
    if _hook is not None:
        _hook(op, os.fspath(path))


class FaultPlan:
    """Fail matching file operations with an `OSError` (tests only).

    Counts operations whose kind is in `ops` and whose file name matches the glob `name`; the
    `nth` such operation and the `times - 1` after it fail with `errno` (`times=None`: every
    one from the nth on). `record=True` keeps every operation seen in `.trace`."""

    def __init__(self, ops: str | tuple[str, ...] = OPS, name: str = "*", nth: int = 1,
                 errno: int = errno_mod.ENOSPC, times: int | None = 1, record: bool = False):
        self.ops = (ops,) if isinstance(ops, str) else tuple(ops)
        self.name, self.nth, self.errno, self.times = name, nth, errno, times
        self.seen = 0
        self.failed = 0
        self.trace: list[tuple[str, str]] = [] if record else None
        self._lock = threading.Lock()

    def __call__(self, op: str, path: str) -> None:
        with self._lock:
            if self.trace is not None:
                self.trace.append((op, path))
            if op not in self.ops or not fnmatch.fnmatch(os.path.basename(path), self.name):
                return
            self.seen += 1
            if self.seen < self.nth or (self.times is not None and self.failed >= self.times):
                return
            self.failed += 1
        raise OSError(self.errno, f"{os.strerror(self.errno)} (injected)", path)

    def __enter__(self) -> "FaultPlan":
        global _hook
        _hook = self
        return self

    def __exit__(self, *exc) -> None:
        global _hook
        _hook = None


def _storage_error(e: OSError, op: str, path) -> StorageError:
    if isinstance(e, StorageError):
        return e
    return StorageError(e.errno, f"could not {op} {os.fspath(path)}: "
                                 f"{e.strerror or e}")


# -- folder and file primitives ------------------------------------------------------------
def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so that creates, renames and deletes in it are durable."""
    try:
        _io("fsync", path)
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise _storage_error(e, "fsync folder", path) from None


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create a folder (and parents) durably; return it as a Path."""
    path = Path(path)
    if not path.is_dir():
        try:
            _io("mkdir", path)
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _storage_error(e, "create folder", path) from None
        fsync_dir(path.parent)
    return path


def rename(src: str | os.PathLike, dst: str | os.PathLike, sync: bool = True) -> None:
    """Rename atomically (replacing `dst`), then fsync the destination folder."""
    try:
        _io("rename", dst)
        os.replace(src, dst)
    except OSError as e:
        raise _storage_error(e, "rename to", dst) from None
    if sync:
        fsync_dir(Path(dst).parent)


def remove_file(path: str | os.PathLike, sync_dir: bool = True) -> None:
    """Delete a file if present, then fsync its folder."""
    path = Path(path)
    try:
        _io("unlink", path)
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise _storage_error(e, "delete", path) from None
    if sync_dir:
        fsync_dir(path.parent)


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Delete half-written temp files left by a crash during an atomic replace."""
    for p in Path(folder).glob("*" + TMP_SUFFIX):
        remove_file(p, sync_dir=False)


class _OpenFile:
    """One open file whose every operation goes through the fault seam (OSError surfaces as
    StorageError naming the file). `sync` uses fsync, or fdatasync where only data matters."""

    data_only_sync = False

    def __init__(self, path: str | os.PathLike, flags: int, verb: str):
        self.path = Path(path)
        try:
            _io("open", self.path)
            self.fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise _storage_error(e, verb, self.path) from None

    def _write_all(self, data, seen: Callable[[memoryview], None] | None = None) -> int:
        view = memoryview(data).cast("B")
        total = view.nbytes
        try:
            _io("write", self.path)
            while view:
                n = os.write(self.fd, view)
                if seen is not None:
                    seen(view[:n])
                view = view[n:]
        except OSError as e:
            raise _storage_error(e, "write", self.path) from None
        return total

    def sync(self) -> None:
        try:
            _io("fsync", self.path)
            (os.fdatasync if self.data_only_sync else os.fsync)(self.fd)
        except OSError as e:
            raise _storage_error(e, "fsync", self.path) from None

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class WriteFile(_OpenFile):
    """A new file being written, checksummed as it goes (file-like for pyarrow and numpy)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "create")
        self.crc = 0
        self.size = 0

    def write(self, data) -> int:
        return self._write_all(data, self._count)

    def _count(self, chunk: memoryview) -> None:
        self.crc = zlib.crc32(chunk, self.crc)
        self.size += chunk.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:                  # file-like API for pyarrow / numpy writers
        pass

    def write_footer(self) -> None:
        self.write(FOOTER.pack(self.size, self.crc, FOOTER_MAGIC))


def _atomic_write(path: str | os.PathLike, fill: Callable[[WriteFile], None],
                  footer: bool = True) -> None:
    """Write a temp file with `fill`, add the checksum footer, fsync, rename into place."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    f = WriteFile(tmp)
    try:
        try:
            fill(f)
            if footer:
                f.write_footer()
            f.sync()
        finally:
            f.close()
        rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):                  # not renamed: the temp file is garbage
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` (plus checksum footer) atomically and durably."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_stream(path: str | os.PathLike, fill: Callable[[WriteFile], None]) -> None:
    """Replace `path` with what `fill` writes to the given file object, checksummed."""
    _atomic_write(path, fill)


# -- reading checksummed files -------------------------------------------------------------
def read_raw(path: str | os.PathLike) -> bytes:
    """A file's bytes as stored (no checksum to verify: the WAL checks its own records)."""
    try:
        _io("read", path)
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise _storage_error(e, "read", path) from None


def _check_footer(buf, path) -> int:
    """Verify the footer of `buf` (a whole file); return the length of the data before it."""
    n = len(buf)
    if n < FOOTER.size:
        raise CorruptionError(f"{path}: file is {n} bytes, too short for its checksum footer")
    length, crc, magic = FOOTER.unpack_from(buf, n - FOOTER.size)
    if magic != FOOTER_MAGIC or length != n - FOOTER.size:
        raise CorruptionError(f"{path}: checksum footer missing or damaged (offset "
                              f"{n - FOOTER.size}); the file is corrupt or not unidb's")
    actual = zlib.crc32(memoryview(buf)[:length])
    if actual != crc:
        raise CorruptionError(f"{path}: checksum mismatch (stored {crc:08x}, computed "
                              f"{actual:08x}); the file is corrupt")
    return length


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file written by `atomic_write_bytes`, verifying its checksum."""
    data = read_raw(path)
    return data[:_check_footer(data, path)]


def map_verified(path: str | os.PathLike) -> tuple[mmap.mmap, int]:
    """Memory-map a checksummed file read-only; returns (map, length of the data)."""
    try:
        _io("read", path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < FOOTER.size:
                raise CorruptionError(f"{path}: file is {size} bytes, too short for its "
                                      f"checksum footer")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise
    except (CorruptionError, StorageError):
        raise
    except OSError as e:
        raise _storage_error(e, "read", path) from None
    return mm, _check_footer(mm, path)


def verify_file(path: str | os.PathLike) -> None:
    """Check one file's checksum by its kind (binary footer, or JSON member)."""
    if str(path).endswith(".json"):
        read_json(path)
    else:
        mm, _ = map_verified(path)
        mm.close()


# -- JSON ----------------------------------------------------------------------------------
def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def atomic_write_json(path: str | os.PathLike, obj: Mapping[str, Any]) -> None:
    """Replace `path` with `obj` as readable JSON carrying its own checksum."""
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    body[CHECKSUM_KEY] = f"crc32:{zlib.crc32(_canonical(body)):08x}"
    text = json.dumps(body, indent=1, sort_keys=True, allow_nan=False).encode()
    _atomic_write(path, lambda f: f.write(text), footer=False)


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file written by `atomic_write_json`, verifying its checksum."""
    data = read_raw(path)
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptionError(f"{path}: unreadable JSON ({e}); the file is corrupt") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(CHECKSUM_KEY), str):
        raise CorruptionError(f"{path}: no checksum member (damaged, or written by an older "
                              f"unidb)")
    stored = obj.pop(CHECKSUM_KEY)
    actual = f"crc32:{zlib.crc32(_canonical(obj)):08x}"
    if stored != actual:
        raise CorruptionError(f"{path}: checksum mismatch (stored {stored}, computed {actual}); "
                              f"the file is corrupt")
    return obj


# -- numpy arrays --------------------------------------------------------------------------
def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as checksummed .npy atomically and durably."""
    arr = np.ascontiguousarray(array)

    def fill(f: WriteFile) -> None:
        header = io.BytesIO()
        # version 1.0 headers hold up to 64 KiB: any shape unidb writes (1-D and 2-D arrays)
        np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(arr))
        f.write(header.getvalue())
        if arr.nbytes:
            f.write(arr.reshape(-1).view(np.uint8))

    _atomic_write(path, fill)


def read_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read a checksummed .npy file (memory-mapped read-only when `mmap`)."""
    mm, length = map_verified(path)
    try:
        bio = io.BytesIO(mm[:min(length, 65_600)])
        version = np.lib.format.read_magic(bio)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(bio) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(bio))
        offset = bio.tell()
        if dtype.hasobject or offset + int(np.prod(shape)) * dtype.itemsize != length:
            raise ValueError("array size does not match the file")
        arr = np.ndarray(shape, dtype, buffer=mm, offset=offset, order="F" if fortran else "C")
    except ValueError as e:
        mm.close()
        raise CorruptionError(f"{path}: not a valid array file ({e})") from None
    return arr if mmap else np.array(arr)


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write several named arrays into one checksummed .npz file atomically and durably."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getbuffer())


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a file written by `write_arrays`, verifying its checksum."""
    data = read_bytes(path)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, KeyError) as e:
        raise CorruptionError(f"{path}: not a valid arrays file ({e})") from None


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy bytes as they are (checksums travel with them), fsynced; no folder sync."""
    f = WriteFile(dst)
    try:
        with open(src, "rb") as fi:
            while chunk := fi.read(1 << 20):
                f.write(chunk)
        f.sync()
    finally:
        f.close()


# -- the write-ahead log's append-only file ------------------------------------------------
class AppendFile(_OpenFile):
    """An append-only file (the WAL) whose appends can be synced and cut back on failure."""

    data_only_sync = True

    def __init__(self, path: str | os.PathLike, create_with: bytes | None = None):
        if create_with is not None:
            f = WriteFile(path)
            try:
                f.write(create_with)
                f.sync()
            finally:
                f.close()
            fsync_dir(Path(path).parent)
        super().__init__(path, os.O_WRONLY | os.O_APPEND, "open")
        self.size = os.fstat(self.fd).st_size

    def append(self, data) -> None:
        self._write_all(data)

    def truncate(self, size: int) -> None:
        """Cut the file back to `size` bytes and make that durable."""
        try:
            _io("truncate", self.path)
            os.ftruncate(self.fd, size)
        except OSError as e:
            raise _storage_error(e, "truncate", self.path) from None
        self.sync()
