"""Encoding of one committed write (deleted row ids + inserted rows) as a WAL payload.

Layout: u8 flags | u64 number of deleted row ids | int64 row ids | Arrow IPC stream of the
inserted batch (present when flags & HAS_INSERT). The batch carries its `_rowid` column, so
replay reproduces exactly the row ids the original write assigned.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from unidb.errors import CorruptionError

HAS_INSERT = 1
_HEAD = struct.Struct("<BQ")


@dataclass
class Commit:
    deletes: np.ndarray            # int64 row ids tombstoned by this write
    batch: pa.RecordBatch | None   # inserted rows, with `_rowid`


def encode_commit(commit: Commit) -> bytes:
    deletes = np.ascontiguousarray(commit.deletes, dtype="<i8")
    parts = [_HEAD.pack(HAS_INSERT if commit.batch is not None else 0, len(deletes)),
             deletes.tobytes()]
    if commit.batch is not None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, commit.batch.schema) as w:
            w.write_batch(commit.batch)
        parts.append(sink.getvalue().to_pybytes())
    return b"".join(parts)


def decode_commit(payload: bytes, where: str) -> Commit:
    try:
        flags, n = _HEAD.unpack_from(payload, 0)
        start = _HEAD.size
        deletes = np.frombuffer(payload, dtype="<i8", count=n, offset=start).astype(np.int64)
        batch = None
        if flags & HAS_INSERT:
            reader = pa.ipc.open_stream(pa.py_buffer(payload)[start + 8 * n:])
            batches = list(reader)
            batch = batches[0] if len(batches) == 1 else pa.Table.from_batches(batches) \
                .combine_chunks().to_batches()[0]
        return Commit(deletes, batch)
    except (struct.error, ValueError, pa.ArrowInvalid) as e:
        raise CorruptionError(f"{where}: undecodable WAL record: {e}") from None
