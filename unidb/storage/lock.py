"""The writer lock: one writing process per database folder.

`flock` on `<db>/LOCK` is released by the kernel when the holder dies (even by kill -9), so a
crashed writer never leaves a stale lock; the file holds the holder's pid for the error message.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from unidb.errors import LockedError

LOCK_NAME = "LOCK"


class WriterLock:
    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise LockedError(f"database {self.path.parent} is open for writing by {who}; "
                              f"close it there, or open with read_only=True",
                              pid=holder) from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except OSError as e:
            # The pid is only for messages: the lock is held, so go on without it.
            _ = e

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
