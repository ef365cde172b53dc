"""The database folder: its marker file, the writer lock, and one sub-folder per table.

Layout::

    <db>/unidb.json          format marker (written once at creation)
    <db>/LOCK                writer lock (flock) holding the writer's pid
    <db>/tables/<name>/      one table: MANIFEST.json, wal-*.log, seg-*.arrow, tomb-*.roaring,
                             idx-*/ (index files)

A table is created in a temp folder and renamed into place, and dropped by renaming it out of
`tables/` before deleting, so a crash never leaves a half-made or half-dropped table visible.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from unidb.errors import CorruptionError, NotFoundError, SchemaError, UnidbError
from unidb.storage import files
from unidb.storage.lock import WriterLock
from unidb.storage.manifest import manifest_path

MARKER = "unidb.json"
FORMAT = "unidb-db/2"          # 2: every file checksummed (docs/storage.md)
TABLES = "tables"
# Names become folder names: a strict pattern rules out path traversal and odd filesystems.
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$")


class DatabaseFolder:
    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if self.path.exists() and not self.path.is_dir():
            raise UnidbError(f"{self.path} is a file, not a unidb database folder; pass a "
                             f"folder path (it is created if missing)")
        self.lock = WriterLock(self.path)
        try:
            self._open(read_only)
        except BaseException:
            self.lock.release()                  # a failed open must not keep the lock
            raise

    def _open(self, read_only: bool) -> None:
        marker = self.path / MARKER
        if not marker.exists():
            if read_only:
                raise NotFoundError(f"no unidb database at {self.path} (read-only open cannot "
                                    f"create one)")
            if self.path.exists() and any(p for p in self.path.iterdir()
                                          if p.name not in (MARKER, "LOCK", TABLES)):
                raise UnidbError(f"{self.path} exists and is not a unidb database (it has other "
                                 f"files); pick an empty or new folder")
            files.ensure_dir(self.path)
            self.lock.acquire()
            files.ensure_dir(self.path / TABLES)
            files.atomic_write_json(marker, {"format": FORMAT})
        else:
            fmt = files.read_json(marker).get("format")
            if fmt != FORMAT:
                raise CorruptionError(f"{marker}: unsupported database format {fmt!r} (this "
                                      f"unidb reads {FORMAT!r})")
            if not read_only:
                self.lock.acquire()
            files.ensure_dir(self.path / TABLES) if not read_only else None
        if not read_only:
            self._cleanup()

    def _cleanup(self) -> None:
        """Finish drops and discard creations that a crash interrupted."""
        for p in (self.path / TABLES).iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)

    def close(self) -> None:
        self.lock.release()

    @staticmethod
    def check_name(name: str) -> str:
        if not isinstance(name, str) or not TABLE_NAME.match(name):
            raise SchemaError(f"table name {name!r} must start with a letter or '_' and contain "
                              f"only letters, digits, '_' and '-' (at most 128 characters)")
        return name

    def table_dir(self, name: str) -> Path:
        return self.path / TABLES / self.check_name(name)

    def table_names(self) -> list[str]:
        root = self.path / TABLES
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir()
                      if not p.name.startswith(".") and manifest_path(p).exists())

    def exists(self, name: str) -> bool:
        return manifest_path(self.table_dir(name)).exists()

    def staging_dir(self, name: str) -> Path:
        """A hidden folder in which a new table is built before `publish`."""
        p = self.path / TABLES / f".new-{self.check_name(name)}-{time.time_ns()}"
        files.ensure_dir(p)
        return p

    def publish(self, staging: Path, name: str) -> Path:
        target = self.table_dir(name)
        files.rename(staging, target)
        return target

    def drop(self, name: str) -> None:
        target = self.table_dir(name)
        if not target.exists():
            raise NotFoundError(f"table {name!r} does not exist")
        trash = self.path / TABLES / f".drop-{name}-{time.time_ns()}"
        files.rename(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
