"""Exact flat scan over a row bitmap, honouring the scan protocol (unidb.index.iterator).

All distances of the (masked) rows are computed up front with one BLAS matrix-vector product;
batches are then produced in increasing distance by sorting geometrically growing
`argpartition` windows, so draining k rows costs O(n + k log k), draining all O(n log n).
Distances are true metric values: l2 Euclidean (not squared), cosine 1 - cos, ip -dot.
"""
from __future__ import annotations

import numpy as np

from unidb.index.iterator import ScanBatch
from unidb.index.rowfilter import RowFilter

DEFAULT_BATCH = 256          # rows per yielded batch: amortises Python overhead per batch
_FIRST_WINDOW = 4            # first sorted window = 4 batches; each next window doubles


def query_vector(query: np.ndarray, dim: int | None = None) -> np.ndarray:
    """A 1-D float64 query, checked for shape and finiteness."""
    q = np.asarray(query, dtype=np.float64)
    if q.ndim != 1:
        raise ValueError(f"query must be one 1-D vector, got shape {q.shape}")
    if dim is not None and len(q) != dim:
        raise ValueError(f"query has dimension {len(q)}, the column has {dim}")
    if not np.all(np.isfinite(q)):
        raise ValueError("query contains NaN or inf")
    return q


def distances(matrix: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Distances (float64) of every row of `matrix` to one query, for l2 / cosine / ip."""
    if len(matrix) == 0:
        return np.empty(0, dtype=np.float64)
    q = np.asarray(query, dtype=matrix.dtype if matrix.dtype == np.float32 else np.float64)
    dots = (matrix @ q).astype(np.float64)
    if metric == "ip":
        return -dots
    if metric == "cosine":
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
        qn = float(np.linalg.norm(query))
        denom = norms * qn
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
        return 1.0 - cos
    if metric == "l2":
        sq = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
        qq = float(np.dot(query, query))
        return np.sqrt(np.maximum(sq - 2.0 * dots + qq, 0.0))
    raise ValueError(f"unknown metric {metric!r}; use 'l2', 'cosine' or 'ip'")


def exact_distances(matrix: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Distances recomputed in float64 without cancellation (for the few rows that are kept)."""
    x = np.asarray(matrix, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    if metric == "l2":
        return np.sqrt(np.einsum("ij,ij->i", x - q, x - q))
    return distances(x, q, metric)


class FlatScan:
    """Exact scan over `row_ids` (optionally only the rows a RowFilter, or a bool mask by row
    id, allows), nearest first."""

    default_E = 1
    default_w = 1

    def __init__(self, row_ids: np.ndarray, matrix: np.ndarray, metric: str,
                 query: np.ndarray, row_mask: RowFilter | np.ndarray | None = None,
                 batch_size: int = DEFAULT_BATCH):
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if row_mask is not None:
            keep = row_mask.allows(row_ids) if isinstance(row_mask, RowFilter) \
                else np.asarray(row_mask, dtype=bool)[row_ids]
            row_ids, matrix = row_ids[keep], matrix[keep]
        self.metric = metric
        self.query = query_vector(query, matrix.shape[1] if matrix.ndim == 2 else None)
        self._ids = row_ids
        self._matrix = matrix
        self._d = distances(matrix, self.query, metric)
        self.distances_computed = len(row_ids)
        self._remaining = np.arange(len(row_ids))   # positions not yet placed in a window
        self._window = np.empty(0, dtype=np.int64)  # sorted positions ready to yield
        self._batch = int(batch_size)
        self._next_window = self._batch * _FIRST_WINDOW

    def cost(self) -> int:
        return len(self._window) + len(self._remaining)

    def next_batch(self) -> ScanBatch | None:
        if len(self._window) == 0:
            if len(self._remaining) == 0:
                return None
            self._fill_window()
        take, self._window = self._window[:self._batch], self._window[self._batch:]
        d = self._exact(take)
        order = np.argsort(d, kind="stable")
        return ScanBatch(self._ids[take[order]], d[order])

    def _fill_window(self) -> None:
        rem, size = self._remaining, self._next_window
        self._next_window *= 2
        if len(rem) > size:
            part = np.argpartition(self._d[rem], size - 1)
            win, self._remaining = rem[part[:size]], rem[part[size:]]
        else:
            win, self._remaining = rem, rem[:0]
        self._window = win[np.argsort(self._d[win], kind="stable")]

    def _exact(self, pos: np.ndarray) -> np.ndarray:
        # Re-score the yielded rows in float64 (no |x|^2 - 2xq cancellation, no float32
        # dot products); the order inside a batch follows the exact values.
        return exact_distances(self._matrix[pos], self.query, self.metric)
