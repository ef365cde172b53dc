"""A table's manifest: the one small file that names its live files.

Replaced atomically (write temp, fsync, rename, fsync folder) at every checkpoint and
compaction, so after a crash the table is exactly the manifest's files plus the WAL records
past `checkpoint_lsn`. Anything else in the folder is an orphan of an interrupted operation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from unidb.errors import CorruptionError
from unidb.storage.files import atomic_write_json, read_json

MANIFEST_NAME = "MANIFEST.json"
FORMAT = "unidb-table/1"


@dataclass
class Manifest:
    schema: dict
    segments: list[str] = field(default_factory=list)    # file names, in row-id order
    tombstones: str | None = None                         # roaring bitmap file
    wal: str = ""                                         # the active log file
    checkpoint_lsn: int = 0                               # records <= this are in segments
    next_rowid: int = 0                                   # row ids below this exist in segments
    next_file: int = 1                                    # sequence for new file names
    version: int = 0                                      # bumped on every replace
    indexes: dict = field(default_factory=dict)           # column -> index definition
    format: str = FORMAT

    def new_name(self, prefix: str, suffix: str) -> str:
        name = f"{prefix}-{self.next_file:06d}{suffix}"
        self.next_file += 1
        return name


def manifest_path(folder: Path) -> Path:
    return Path(folder) / MANIFEST_NAME


def write_manifest(folder: Path, m: Manifest) -> None:
    m.version += 1
    atomic_write_json(manifest_path(folder), asdict(m))


def read_manifest(folder: Path) -> Manifest:
    path = manifest_path(folder)
    try:
        d = read_json(path)
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise CorruptionError(f"{path}: unreadable manifest: {e}") from None
    if d.get("format") != FORMAT:
        raise CorruptionError(f"{path}: unknown manifest format {d.get('format')!r}")
    return Manifest(**d)
