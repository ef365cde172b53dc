"""Sorted index on one numeric column: (key, row_id) pairs in key order.

A range scan is the strictly monotone access path of ALGORITHMS.md §1 (E = w = 1): it yields
row ids in key order with the key as the "distance". Nulls are not indexed (a comparison with
null is never true). Honours the index contract (index/contract.py: ScalarIndex).

Snapshot files in the index folder (unidb.storage.files: atomic replace each): `sorted.npz`
(keys and row ids), then `sorted.json` ({"covered": watermark}). The two are replaced one
after the other, so a reader that loads while a save runs may pair a new array with an old
watermark: read-only processes rebuild this index from the rows instead (one sort).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unidb.index.iterator import ScanBatch
from unidb.storage import files

SCAN_BATCH = 4096            # row ids per yielded batch of a range scan
DATA = "sorted.npz"
META = "sorted.json"


class SortedIndex:
    """Keys sorted ascending with their row ids (ties by row id)."""

    # stats(): indexed rows ("rows" = "live_rows": deletes remove entries), bytes of the arrays
    STATS_KEYS = ("rows", "live_rows", "bytes")

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.float64)
        self.row_ids = np.empty(0, dtype=np.int64)

    @classmethod
    def build(cls, row_ids: np.ndarray, values) -> "SortedIndex":
        """Index `values[i]` for `row_ids[i]`; None / NaN / masked (Arrow null) are skipped."""
        idx = cls()
        idx.add(row_ids, values)
        return idx

    def __len__(self) -> int:
        """Indexed rows (nulls are not indexed; deletes remove their entries)."""
        return len(self.keys)

    def stats(self) -> dict:
        n = len(self.keys)
        return {"rows": n, "live_rows": n, "bytes": int(self.keys.nbytes + self.row_ids.nbytes)}

    def close(self) -> None:
        """Nothing to release: the index is two in-memory arrays (a no-op, idempotent)."""

    @staticmethod
    def _clean(row_ids, values) -> tuple[np.ndarray, np.ndarray]:
        if hasattr(values, "to_numpy") and hasattr(values, "is_null"):   # pyarrow array
            valid = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            vals = np.asarray(values.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
        else:
            vals = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64) \
                if isinstance(values, list) else np.asarray(values, dtype=np.float64)
            valid = np.ones(len(vals), dtype=bool)
        valid &= ~np.isnan(vals)
        ids = np.asarray(row_ids, dtype=np.int64)
        if len(ids) != len(vals):
            raise ValueError(f"{len(ids)} row ids but {len(vals)} values")
        return ids[valid], vals[valid]

    def add(self, row_ids, values) -> None:
        """Insert rows (merge into the sorted arrays)."""
        ids, vals = self._clean(row_ids, values)
        if not len(ids):
            return
        order = np.lexsort((ids, vals))
        ids, vals = ids[order], vals[order]
        if len(self.row_ids) and ids[0] > self.row_ids.max():
            # New rows carry the largest row ids (the table hands them out in increasing
            # order), so among equal keys they go last: one O(n) insert, not a re-sort.
            pos = np.searchsorted(self.keys, vals, side="right")
            self.keys = np.insert(self.keys, pos, vals)
            self.row_ids = np.insert(self.row_ids, pos, ids)
            return
        keys = np.concatenate([self.keys, vals])
        rids = np.concatenate([self.row_ids, ids])
        order = np.lexsort((rids, keys))
        self.keys, self.row_ids = keys[order], rids[order]

    def delete(self, row_ids) -> int:
        """Remove every entry of the given row ids; returns how many were indexed."""
        keep = ~np.isin(self.row_ids, np.asarray(row_ids, dtype=np.int64))
        removed = len(keep) - int(keep.sum())
        if removed:
            self.keys, self.row_ids = self.keys[keep], self.row_ids[keep]
        return removed

    def _bounds(self, lo, hi, lo_incl: bool, hi_incl: bool) -> tuple[int, int]:
        a = 0 if lo is None else int(np.searchsorted(self.keys, lo, "left" if lo_incl else "right"))
        b = len(self.keys) if hi is None else int(
            np.searchsorted(self.keys, hi, "right" if hi_incl else "left"))
        return a, max(a, b)

    def count_range(self, lo=None, hi=None, lo_incl: bool = True, hi_incl: bool = True) -> int:
        """Exact number of indexed rows with key in the range (None = unbounded)."""
        a, b = self._bounds(lo, hi, lo_incl, hi_incl)
        return b - a

    def range_rows(self, lo=None, hi=None, lo_incl: bool = True, hi_incl: bool = True) -> np.ndarray:
        """All row ids with key in the range, in key order."""
        a, b = self._bounds(lo, hi, lo_incl, hi_incl)
        return self.row_ids[a:b]

    def range_scan(self, lo=None, hi=None, lo_incl: bool = True, hi_incl: bool = True,
                   batch_size: int = SCAN_BATCH) -> "RangeScan":
        """Scan (ScanIterator) of the rows in the range in key order; distance = key."""
        a, b = self._bounds(lo, hi, lo_incl, hi_incl)
        return RangeScan(self.keys[a:b], self.row_ids[a:b], batch_size)

    def save(self, folder: str | os.PathLike, covered: int) -> None:
        """Snapshot into `folder` (module docstring), tagged with the watermark `covered`."""
        folder = files.ensure_dir(folder)
        files.write_arrays(folder / DATA, {"keys": self.keys, "row_ids": self.row_ids})
        files.atomic_write_json(folder / META, {"covered": int(covered)})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> tuple["SortedIndex", int]:
        """(index, covered) from the snapshot in `folder`."""
        folder = Path(folder)
        meta = files.read_json(folder / META)
        arrs = files.read_arrays(folder / DATA)
        idx = cls()
        idx.keys, idx.row_ids = arrs["keys"].astype(np.float64), arrs["row_ids"].astype(np.int64)
        return idx, int(meta["covered"])


class RangeScan:
    """Strictly monotone scan over a slice of a SortedIndex."""

    default_E = 1
    default_w = 1

    def __init__(self, keys: np.ndarray, row_ids: np.ndarray, batch_size: int):
        self._keys, self._ids, self._pos, self._batch = keys, row_ids, 0, int(batch_size)

    def cost(self) -> int:
        return len(self._ids) - self._pos

    def next_batch(self) -> ScanBatch | None:
        if self._pos >= len(self._ids):
            return None
        a, self._pos = self._pos, min(self._pos + self._batch, len(self._ids))
        return ScanBatch(self._ids[a:self._pos], self._keys[a:self._pos])
