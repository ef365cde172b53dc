"""Offline verification of a database folder (`unidb check PATH`).

Reads every file unidb wrote and verifies it the way opening the database would, without
changing anything: the catalog marker, each table's manifest, segments (checksum, Arrow
structure, increasing row ids), tombstones, the WAL (every record, telling a torn tail from
damage before it), index snapshots and the server's key store. It holds the writer lock while
it reads, so no writer replaces files under it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyroaring import BitMap

from unidb.errors import CorruptionError, NotFoundError, StorageError
from unidb.storage import files
from unidb.storage.catalog import FORMAT, MARKER, TABLES
from unidb.storage.lock import WriterLock
from unidb.storage.manifest import MANIFEST_NAME, read_manifest
from unidb.storage.segment import read_segment
from unidb.storage.wal import read_raw, read_wal

# Index folders hold working files of the disk posting store: scratch space rebuilt from the
# snapshot on open, not part of it, so they carry no checksum.
_UNCHECKED_PREFIXES = ("postings-work-",)


@dataclass
class CheckReport:
    """What `check_database` found: files verified, problems (file, message), notes."""
    path: Path
    verified: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_database(path: str | Path) -> CheckReport:
    """Verify every file of the database at `path`; never modifies it."""
    path = Path(path)
    if not (path / MARKER).is_file():
        raise NotFoundError(f"no unidb database at {path} (no {MARKER})")
    report = CheckReport(path)
    lock = WriterLock(path)
    lock.acquire()                               # LockedError if a writer has it open
    try:
        if _verify(report, path / MARKER, lambda p: files.read_json(p)):
            fmt = files.read_json(path / MARKER).get("format")
            if fmt != FORMAT:
                report.problems.append((str(path / MARKER), f"format {fmt!r}, expected "
                                                           f"{FORMAT!r}"))
        for table in sorted((path / TABLES).iterdir()) if (path / TABLES).is_dir() else []:
            if table.is_dir() and not table.name.startswith("."):
                _check_table(report, table)
        keys = path / "server" / "keys.json"
        if keys.exists():
            _verify(report, keys, files.read_json)
    finally:
        lock.release()
    return report


def _verify(report: CheckReport, p: Path, read) -> bool:
    try:
        read(p)
    except FileNotFoundError:
        report.problems.append((str(p), "missing"))
        return False
    except (CorruptionError, StorageError) as e:
        report.problems.append((str(p), str(e)))
        return False
    report.verified.append(str(p))
    return True


def _check_table(report: CheckReport, folder: Path) -> None:
    if not _verify(report, folder / MANIFEST_NAME, lambda p: read_manifest(p.parent)):
        return
    m = read_manifest(folder)
    for seg in m.segments:
        _verify(report, folder / seg, read_segment)
    if m.tombstones:
        _verify(report, folder / m.tombstones, _read_tombstones)
    wal = folder / m.wal
    try:
        first_lsn, records = read_wal(wal, repair=False)
    except FileNotFoundError:
        report.problems.append((str(wal), "missing"))
    except (CorruptionError, StorageError) as e:
        report.problems.append((str(wal), str(e)))
    else:
        report.verified.append(str(wal))
        if first_lsn != m.checkpoint_lsn + 1:
            report.problems.append((str(wal), f"starts at lsn {first_lsn}, the manifest's "
                                              f"checkpoint is lsn {m.checkpoint_lsn}"))
        end = records[-1].end if records else None
        size = len(read_raw(wal))
        if end is not None and end < size:
            report.notes.append(f"{wal}: torn tail of {size - end} bytes after the last "
                                f"complete record (removed at the next open)")
        report.notes.append(f"{wal}: {len(records)} records past the checkpoint")
    named = set(m.segments) | {m.wal, MANIFEST_NAME} | ({m.tombstones} if m.tombstones else set())
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.startswith(("seg-", "wal-", "tomb-")) and p.name not in named:
            report.notes.append(f"{p}: not named by the manifest (left by an interrupted "
                                f"operation; removed at the next open)")
        if p.is_dir() and p.name.startswith("idx-"):
            _check_index(report, p)


def _read_tombstones(p: Path) -> None:
    try:
        BitMap.deserialize(files.read_bytes(p))
    except (ValueError, OverflowError) as e:
        raise CorruptionError(f"{p}: undecodable tombstone bitmap: {e}") from None


def _check_index(report: CheckReport, folder: Path) -> None:
    """Index snapshots: every file checksummed (a bad one is rebuilt from the rows on open)."""
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.endswith(files.TMP_SUFFIX) \
                or p.name.startswith(_UNCHECKED_PREFIXES):
            continue
        if not _verify(report, p, files.verify_file):
            report.notes.append(f"{folder.name}: a damaged index snapshot is rebuilt from the "
                                f"table's rows when the table is opened")
