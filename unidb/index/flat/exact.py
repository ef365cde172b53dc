"""The `flat` access path: exact top-k and range search over a table state's parts.

Each part's vector column is viewed zero-copy as an (n, dim) float32 matrix; squared norms
(l2) or norms (cosine) are computed once per immutable part and cached on it. The query's
`RowFilter` (unidb/index/rowfilter.py, evaluated once before the scan) gives each part its
mask of allowed rows; sparse masks gather the matching rows first so a 1% filter costs ~1% of
the arithmetic.
"""
from __future__ import annotations

import numpy as np

from unidb.index.rowfilter import RowFilter
from unidb.kernels import exact as K
from unidb.storage.parts import Part, TableState
# Below this fraction of selected rows, gather them before the GEMM instead of masking after.
GATHER_BELOW = 0.5
# Queries per GEMM block: bounds the (queries x rows) float32 scratch to ~64 MiB per part.
SCRATCH_FLOATS = 16 << 20


def part_vectors(part: Part, column: str, metric: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(matrix, aux, valid) for a part: aux = squared norms (l2/ip) or norms (cosine)."""
    key = ("vec", column)
    hit = part.cache.get(key)
    if hit is not None:
        return hit
    arr = part.table.column(column)
    arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    dim = arr.type.list_size
    values = arr.values
    if arr.offset:
        values = values.slice(arr.offset * dim, len(arr) * dim)
    matrix = values.to_numpy(zero_copy_only=False).reshape(-1, dim)[:len(arr)]
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
    sq = K.sq_norms(matrix)
    aux = np.sqrt(sq) if metric == K.METRIC_COSINE else sq
    if valid is not None:
        aux = aux.copy()
        aux[~valid] = 1.0                    # any finite value: these rows are masked out
    hit = (matrix, aux, valid)
    part.cache[key] = hit
    return hit


def _selection(state: TableState, part: Part, column: str, metric: str,
               rows: RowFilter | None) -> np.ndarray | None:
    """Bool mask of rows to consider, or None meaning all rows."""
    mask = state.live_mask(part)
    _, _, valid = part_vectors(part, column, metric)
    if rows is not None:
        mask = mask & rows.allows(part.row_ids)
    if valid is not None:
        mask = mask & valid
    return None if mask.all() else mask


class _PartScan:
    """One part's rows to score: the (possibly gathered) matrix and how to map back."""
    __slots__ = ("part", "matrix", "x", "aux", "rows", "sel", "gather")

    def __init__(self, part, matrix, aux, rows, sel, gather):
        self.part, self.matrix, self.rows, self.sel, self.gather = part, matrix, rows, sel, gather
        self.x = matrix[rows] if gather else matrix
        self.aux = aux[rows] if gather else aux

    def values(self, queries: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Approximate ranking values (masked-out rows = +inf) and tie tolerances."""
        vals, tol = K.approx_scores(self.x, self.aux, queries, metric)
        if self.sel is not None and not self.gather:
            vals[:, ~self.sel] = np.inf
        return vals, tol

    def local(self, idx: np.ndarray) -> np.ndarray:
        """Positions in the part of indices into `values` columns."""
        return self.rows[idx] if self.gather else idx


def _scan_parts(state: TableState, column: str, metric: str, rows: RowFilter | None):
    """Each non-empty part with selected rows, ready to score (gathered when sparse)."""
    for part in state.parts:
        if not part.num_rows:
            continue
        matrix, aux, _ = part_vectors(part, column, metric)
        sel = _selection(state, part, column, metric, rows)
        local = np.arange(part.num_rows) if sel is None else np.flatnonzero(sel)
        if not len(local):
            continue
        gather = sel is not None and len(local) < GATHER_BELOW * part.num_rows
        yield _PartScan(part, matrix, aux, local, sel, gather)


def exact_topk(state: TableState, column: str, metric: str, queries: np.ndarray, k: int,
               rows: RowFilter | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact top-k per query among the allowed rows (every live row when `rows` is None):
    a list of (row_ids int64, distances float64), closest first."""
    nq = len(queries)
    cand_ids: list[list[np.ndarray]] = [[] for _ in range(nq)]
    cand_dist: list[list[np.ndarray]] = [[] for _ in range(nq)]
    for ps in _scan_parts(state, column, metric, rows):
        step = max(1, SCRATCH_FLOATS // max(len(ps.x), 1))
        for q0 in range(0, nq, step):
            qb = queries[q0:q0 + step]
            vals, tol = ps.values(qb, metric)
            for j in range(len(qb)):
                c = K.candidates_topk(vals[j], float(tol[j]), k)
                if not len(c):
                    continue
                local = ps.local(c)
                d = K.exact_distances(ps.matrix[local], qb[j], metric)
                cand_ids[q0 + j].append(ps.part.row_ids[local])
                cand_dist[q0 + j].append(d)
    out = []
    for j in range(nq):
        if not cand_ids[j]:
            out.append((np.zeros(0, np.int64), np.zeros(0, np.float64)))
            continue
        ids = np.concatenate(cand_ids[j])
        dist = np.concatenate(cand_dist[j])
        order = K.order_by_distance(dist, ids)[:k]
        out.append((ids[order], dist[order]))
    return out


def exact_range(state: TableState, column: str, metric: str, query: np.ndarray,
                min_distance: float | None, max_distance: float | None,
                rows: RowFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every allowed row with min_distance <= distance <= max_distance, closest first."""
    q = query.reshape(1, -1)
    hi = np.inf if max_distance is None else K.to_approx_bound(max_distance, metric)
    ids_out, dist_out = [], []
    for ps in _scan_parts(state, column, metric, rows):
        vals, tol = ps.values(q, metric)
        v = vals[0]
        c = K.candidates_range(v, float(tol[0]), hi) if np.isfinite(hi) else \
            np.flatnonzero(np.isfinite(v))
        local = ps.local(c)
        d = K.exact_distances(ps.matrix[local], query, metric)
        keep = np.ones(len(d), dtype=bool)
        if max_distance is not None:
            keep &= d <= max_distance
        if min_distance is not None:
            keep &= d >= min_distance
        ids_out.append(ps.part.row_ids[local[keep]])
        dist_out.append(d[keep])
    if not ids_out:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    ids = np.concatenate(ids_out)
    dist = np.concatenate(dist_out)
    order = K.order_by_distance(dist, ids)
    return ids[order], dist[order]


def live_vectors(state: TableState, column: str, metric: str,
                 rows: RowFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row_ids, matrix) of all allowed rows with a vector, in row-id order (a view when one
    part holds them all, else a copy)."""
    ids, mats = [], []
    for part in state.parts:
        if not part.num_rows:
            continue
        matrix, _, _ = part_vectors(part, column, metric)
        sel = _selection(state, part, column, metric, rows)
        if sel is None:
            ids.append(part.row_ids)
            mats.append(matrix)
        else:
            ids.append(part.row_ids[sel])
            mats.append(matrix[sel])
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    if len(ids) == 1:
        return ids[0], mats[0]
    return np.concatenate(ids), np.concatenate(mats)


def all_distances(state: TableState, column: str, metric: str, query: np.ndarray,
                  rows: RowFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every allowed row, in row-id order, from one float32 BLAS pass.

    For consumers that need a whole ranking (hybrid fusion's dense list) rather than a top-k:
    no float64 re-scoring, so values carry float32 rounding (~1e-7 relative).
    """
    q = query.reshape(1, -1)
    ids_out, dist_out = [], []
    for ps in _scan_parts(state, column, metric, rows):
        v = ps.values(q, metric)[0][0]
        v = (v if ps.gather or ps.sel is None else v[ps.rows]).astype(np.float64)
        if metric == K.METRIC_L2:
            v = np.sqrt(np.maximum(v, 0.0))
        elif metric == K.METRIC_COSINE:
            v = v + 1.0
        ids_out.append(ps.part.row_ids[ps.rows])
        dist_out.append(v)
    if not ids_out:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(ids_out), np.concatenate(dist_out)
