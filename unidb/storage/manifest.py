"""A table's manifest: the one small file that names its live files.

Replaced atomically (write temp, fsync, rename, fsync folder) at every checkpoint and
compaction, so after a crash the table is exactly the manifest's files plus the WAL records
past `checkpoint_lsn`. Anything else in the folder is an orphan of an interrupted operation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unidb.errors import CorruptionError
from unidb.storage.files import atomic_write_json, read_json

MANIFEST_NAME = "MANIFEST.json"
FORMAT = "unidb-table/2"        # 2: checksummed files (docs/storage.md)


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

    def copy(self) -> "Manifest":
        """A copy to change: a manifest is edited as a copy and adopted once it is on disk."""
        return dataclasses.replace(self, segments=list(self.segments), indexes=dict(self.indexes))

    def new_name(self, prefix: str, suffix: str) -> str:
        name = f"{prefix}-{self.next_file:06d}{suffix}"
        self.next_file += 1
        return name


def manifest_path(folder: Path) -> Path:
    return Path(folder) / MANIFEST_NAME


def write_manifest(folder: Path, m: Manifest) -> None:
    """Replace the manifest with `m` (its version bumped) durably."""
    m.version += 1
    atomic_write_json(manifest_path(folder), asdict(m))


def manifest_in_place(folder: Path, m: Manifest) -> bool:
    """Whether the manifest on disk is `m` — after a failed replace, did the rename happen?"""
    try:
        return read_manifest(folder).version == m.version
    except (OSError, CorruptionError):
        return False


_FIELD_TYPES = {"schema": dict, "segments": list, "wal": str, "checkpoint_lsn": int,
                "next_rowid": int, "next_file": int, "version": int, "indexes": dict,
                "format": str}


def read_manifest(folder: Path) -> Manifest:
    """Read and check a table's manifest (`CorruptionError` if it is damaged)."""
    path = manifest_path(folder)
    d = read_json(path)
    if d.get("format") != FORMAT:
        raise CorruptionError(f"{path}: unknown manifest format {d.get('format')!r} (expected "
                              f"{FORMAT!r}; written by another unidb version?)")
    bad = [k for k, t in _FIELD_TYPES.items() if not isinstance(d.get(k), t)]
    bad += [k for k in d if k not in _FIELD_TYPES and k != "tombstones"]
    if bad or not (d.get("tombstones") is None or isinstance(d["tombstones"], str)):
        raise CorruptionError(f"{path}: manifest fields missing or of the wrong type: "
                              f"{sorted(bad) or ['tombstones']}")
    return Manifest(**d)
