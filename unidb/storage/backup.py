"""Online backup and restore of a database folder.

Backup copies each table while its owner (the table engine, `TableEngine.copy_files`) holds
the table's write lock and has just checkpointed (so the rows sit in segments and the log is
short): `copy_table` copies exactly the files the manifest names — segments, tombstones, the
log, the manifest — and the index folders. Writers to that table wait for the copy; readers
do not. Tables are copied one after another, so a backup is consistent per table (each table
as of one commit), which is the unit a write touches. Storage never reaches up for the tables:
the layer above hands `backup` one copy function per table.

A backup is itself a database folder (it opens with `unidb.connect`), written under a
temporary name and renamed when complete, so a crash never leaves a half backup that looks
whole. Restore copies a backup into a new or empty folder.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Mapping

from unidb.errors import NotFoundError, ValidationError
from unidb.storage import files
from unidb.storage.catalog import FORMAT, MARKER, TABLES
from unidb.storage.manifest import MANIFEST_NAME
from unidb.storage.table_store import TableStore

BACKUP_INFO = "BACKUP.json"
PARTIAL = ".partial-"
# Never part of a copy: the writer lock of the source, and half-written temp files.
SKIP_NAMES = {"LOCK"}


def confine(base: str | os.PathLike, name: str) -> Path:
    """`base/name`, refusing anything that could leave `base` (absolute paths, '..',
    symlinks pointing out); ValidationError names the offending value."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"a backup name must be a non-empty relative path, got {name!r}")
    p = Path(name)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or "\0" in name \
            or name.startswith("~"):
        raise ValidationError(f"backup path {name!r} must stay inside the backup folder (no "
                              f"absolute paths, no '..')")
    root = Path(base).resolve()
    target = (root / p).resolve()
    if target != root and root not in target.parents:
        raise ValidationError(f"backup path {name!r} resolves outside the backup folder")
    if target == root:
        raise ValidationError("a backup path must name a folder inside the backup folder")
    return target


def backup(tables: Mapping[str, Callable[[Path], dict]], dest: str | os.PathLike) -> dict:
    """Copy every table into a new database folder `dest`; returns what was copied (tables,
    rows, lsn, bytes). `tables[name](folder)` copies table `name` into the new `folder`,
    consistent as of one write, and returns its figures (the engine's `copy_files`, which
    calls `copy_table` under the table's write lock)."""
    dest = Path(dest)
    if dest.exists():
        raise ValidationError(f"backup destination {dest} already exists; pick a new name")
    files.ensure_dir(dest.parent)
    staging = dest.with_name(f"{dest.name}{PARTIAL}{time.time_ns()}")
    files.ensure_dir(staging / TABLES)
    info = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tables": {}}
    try:
        for name, copy in tables.items():
            info["tables"][name] = copy(staging / TABLES / name)
        files.atomic_write_json(staging / MARKER, {"format": FORMAT})
        files.atomic_write_json(staging / BACKUP_INFO, info)
        files.fsync_dir(staging / TABLES)
        staging.rename(dest)
        files.fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    info["path"] = str(dest)
    return info


def copy_table(store: TableStore, target: Path) -> dict:
    """Copy the files of `store` that its manifest names, and its index folders, into the new
    folder `target`; returns rows, lsn, files and bytes. The caller holds the table's write
    lock (writers wait; readers keep their snapshot) and has just checkpointed."""
    store._require_write_lock()          # a write mid-copy would split the table's files
    m = store.manifest
    names = list(m.segments) + [m.wal, MANIFEST_NAME] + ([m.tombstones] if m.tombstones else [])
    files.ensure_dir(target)
    nbytes = 0
    for n in names:
        nbytes += _copy_file(store.folder / n, target / n)
    for sub in sorted(p for p in store.folder.iterdir() if p.is_dir()):
        nbytes += _copy_tree(sub, target / sub.name)
    files.fsync_dir(target)
    state = store.state
    return {"rows": state.live_rows, "lsn": state.lsn, "files": len(names), "bytes": nbytes}


def _copy_file(src: Path, dst: Path) -> int:
    files.copy_file(src, dst)
    return dst.stat().st_size


def _copy_tree(src: Path, dst: Path) -> int:
    files.ensure_dir(dst)
    n = 0
    for p in sorted(src.iterdir()):
        if p.name in SKIP_NAMES or p.name.endswith(files.TMP_SUFFIX) or p.is_symlink():
            continue
        n += _copy_tree(p, dst / p.name) if p.is_dir() else _copy_file(p, dst / p.name)
    files.fsync_dir(dst)
    return n


def restore(source: str | os.PathLike, target: str | os.PathLike) -> dict:
    """Copy the backup at `source` into `target` (new or empty); returns the backup's info."""
    source, target = Path(source), Path(target)
    if not (source / MARKER).is_file():
        raise NotFoundError(f"{source} is not a unidb backup (no {MARKER})")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValidationError(f"restore target {target} must be a new or empty folder")
    files.ensure_dir(target.parent)
    staging = target.with_name(f"{target.name}{PARTIAL}{time.time_ns()}")
    try:
        _copy_tree(source, staging)
        if target.exists():
            target.rmdir()
        files.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    info_path = target / BACKUP_INFO
    info = files.read_json(info_path) if info_path.exists() else {}
    info["path"] = str(target)
    return info

