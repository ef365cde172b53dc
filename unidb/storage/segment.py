"""Immutable column segments: one Arrow IPC file per flushed memtable or compaction output.

A segment holds the table's columns plus `_rowid` (int64, strictly increasing) as a single
record batch, so every column maps to one contiguous buffer that is memory-mapped on read
and viewed by numpy without copying. The Arrow file is followed by unidb's checksum footer
(storage/files.py), verified when the segment is opened.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from unidb.errors import CorruptionError
from unidb.storage import files
from unidb.storage.parts import ROWID


def write_segment(path: Path, table: pa.Table) -> None:
    """Write `table` as one record batch to `path` durably, checksummed."""
    table = table.combine_chunks()
    batches = table.to_batches(max_chunksize=None) or \
        [pa.RecordBatch.from_pylist([], schema=table.schema)]

    def fill(f: files.WriteFile) -> None:
        with pa.ipc.new_file(f, table.schema) as w:
            for b in batches:
                w.write_batch(b)

    files.atomic_write_stream(path, fill)


def read_segment(path: Path) -> pa.Table:
    """Open a segment memory-mapped (zero-copy), verifying its checksum and row ids."""
    mm, length = files.map_verified(path)
    try:
        table = pa.ipc.open_file(pa.py_buffer(mm).slice(0, length)).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptionError(f"{path}: unreadable segment: {e}") from None
    if table.num_columns and any(c.num_chunks > 1 for c in table.columns):
        table = table.combine_chunks()
    if ROWID not in table.column_names:
        raise CorruptionError(f"{path}: segment has no {ROWID} column")
    ids = table.column(ROWID).to_numpy()
    if len(ids) > 1 and not (np.diff(ids) > 0).all():
        raise CorruptionError(f"{path}: segment row ids are not strictly increasing")
    return table
