"""Immutable column segments: one Arrow IPC file per flushed memtable or compaction output.

A segment holds the table's columns plus `_rowid` (int64, strictly increasing) as a single
record batch, so every column maps to one contiguous buffer that is memory-mapped on read
and viewed by numpy without copying.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from unidb.errors import CorruptionError
from unidb.storage.files import fsync_dir, fsync_file, TMP_SUFFIX

import os


def write_segment(path: Path, table: pa.Table) -> int:
    """Write `table` as one record batch to `path` durably; returns bytes written."""
    path = Path(path)
    table = table.combine_chunks()
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        with pa.ipc.new_file(f, table.schema) as w:
            for b in table.to_batches(max_chunksize=None) or [pa.RecordBatch.from_pylist([], schema=table.schema)]:
                w.write_batch(b)
        fsync_file(f)
        size = f.tell()
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return size


def read_segment(path: Path) -> pa.Table:
    """Open a segment memory-mapped (zero-copy)."""
    try:
        source = pa.memory_map(str(path), "r")
        reader = pa.ipc.open_file(source)
        table = reader.read_all()
    except FileNotFoundError:
        raise
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptionError(f"{path}: unreadable segment: {e}") from None
    if table.num_columns and any(c.num_chunks > 1 for c in table.columns):
        table = table.combine_chunks()
    return table
