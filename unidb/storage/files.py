"""Crash-safe file primitives shared by the storage layer and index persistence.

Every replacement follows write-temp, fsync, rename, fsync-folder, so a reader (or a
recovering process) sees either the old file or the new one, never a mix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so that creates, renames and deletes in it are durable."""
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        fsync_file(f)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as .npy atomically and durably (loadable memory-mapped)."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        fsync_file(f)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read a .npy file, memory-mapped read-only when `mmap`."""
    return np.load(os.fspath(path), mmap_mode="r" if mmap else None, allow_pickle=False)


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write several named arrays into one .npz file atomically and durably."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        fsync_file(f)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(os.fspath(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def remove_file(path: str | os.PathLike, sync_dir: bool = True) -> None:
    """Delete a file if present, then fsync its folder."""
    path = Path(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    if sync_dir:
        fsync_dir(path.parent)


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create a folder (and parents) durably; return it as a Path."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        fsync_dir(path.parent)
    return path


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Delete half-written temp files left by a crash during an atomic replace."""
    for p in Path(folder).glob("*" + TMP_SUFFIX):
        p.unlink(missing_ok=True)
