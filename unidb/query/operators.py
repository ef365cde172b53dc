"""Pieces shared by every operator: the bounded top-k buffer, exact scoring over a row set,
and the knobs (E, w, budget) read from a query's params.

The operators themselves live one per file: topk.py (filtered top-k), range.py (distance
range), multivector.py (weighted multi-column top-k), join.py (similarity join).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from unidb.index.flat.scan import distances, exact_distances, query_vector
from unidb.index.rowfilter import RowFilter
from unidb.options import PlannerOptions

# Rows a streaming operator may pull from an access path before it gives up on the index and
# finishes exactly over the matching rows it has not seen (the completeness guarantee):
# PlannerOptions.budget_fraction / budget_min_rows (unidb/options.py). Past about a third of
# the table, the index's per-partition overhead costs more than scoring the unseen matching
# rows directly (bench/filtered.py, docs/query-execution.md).
# Correlation guard (anti_correlated). Measured on synth200k, 20 queries per cell: at the
# stop, visited-rows selectivity / table selectivity was >= 0.72 for uniform filters and
# >= 1.1 for positively correlated ones, but 0.09-0.65 for negatively correlated ones, whose
# streamed answers had recall 0.00-0.02 at 10-90% selectivity (the true neighbours sat in
# the last 30% of the scan). A 3-sigma binomial test keeps small samples from tripping it.
ANTI_RATIO = 0.75
ANTI_Z = 3.0
ANTI_MIN_VISITED = 200
# Range completeness check (sampled_misses): after the stop rule, CHECK_SAMPLE unseen matching
# rows are scored exactly; if they project more than RANGE_MISS_TOLERANCE of the result still
# unseen, the rest is scored exactly. At "shell" radii (the 1,000th neighbour's distance in
# 128-d) in-range rows are spread over the whole partition scan and the stop rule alone gave
# recall 0.46 (synth200k); small radii pass the check and keep the index's speed.
CHECK_SAMPLE = 4096
CHECK_SEED = 0
RANGE_MISS_TOLERANCE = 0.02
# Tail rule (tail_is_cheap): toy IVF, anti-correlated filter, recall 0.75 -> 1.0.
TAIL_FRACTION = 0.25
TAIL_MIN_ROWS = 256
# Detector window on a partition scan, in postings. VBase's window for IVF ("the vectors of
# the partitions probed so far") let MNIST same-label queries stop after ~1 posting at
# recall@10 0.66; the median of the last ~6 postings reached 0.984 at 1,070 rows visited
# (docs/query-execution.md, "window").
WINDOW_POSTINGS = 6
DEFAULT_POSTING_ROWS = 160        # when the index does not say (PartitionOptions.target_posting)
# Top-k on a relaxed scan stops when the window *minimum* (not only the median) is past the
# k-th filtered distance: no row of the last w came closer. Stricter than VBase's median
# (min > kth implies median > kth). SIFT-small, 50% filter: median 0.935 recall at 1,030
# rows visited, min 0.990 at 1,930; unfiltered 0.954 vs 0.985 (docs/query-execution.md).
STOP_STAT_RELAXED = "min"
# float32 BLAS distances are re-checked in float64 within this relative slack of a bound.
RESCORE_SLACK = 1e-4
# Extra rows kept beyond k from a float32 shortlist before the float64 re-score.
SHORTLIST_MARGIN = 32
# Exact scoring of a row set: above this fraction of the live rows it is cheaper to score
# every live row from the contiguous matrix (one GEMV, no gather) and drop the rest.
GATHER_MAX_FRACTION = 0.3


def tail_is_cheap(unseen_matches: int, visited: int) -> bool:
    """Tail rule: when the stop rule fires with few matching rows still unseen (a filter
    anti-correlated with the query leaves them at the end of the scan, where relaxed
    monotonicity is weakest), score them exactly: it costs at most TAIL_FRACTION of the work
    already done and makes the answer exact."""
    return 0 < unseen_matches <= max(TAIL_MIN_ROWS, TAIL_FRACTION * visited)


def anti_correlated(matched_seen: int, visited: int, selectivity: float) -> bool:
    """Correlation guard: the rows visited so far match the filter far less often than the
    table does, so the matching rows nearest the query lie elsewhere (typically at the tail
    of the scan) and no stop rule on this scan can be trusted; the caller finishes exactly.
    Needs both a large relative shortfall and a binomial z-score past ANTI_Z (not noise)."""
    if visited < ANTI_MIN_VISITED or not 0.0 < selectivity < 1.0:
        return False
    expected = visited * selectivity
    if matched_seen >= ANTI_RATIO * expected:
        return False
    z = (matched_seen - expected) / math.sqrt(expected * (1.0 - selectivity))
    return z < -ANTI_Z


def evaluated(source, expr) -> RowFilter:
    """The query's RowFilter: `expr` evaluated once on `source` (every live row when None);
    a RowFilter, already evaluated, passes through."""
    return expr if isinstance(expr, RowFilter) else source.row_filter(expr)


def unseen(rows: RowFilter, seen: np.ndarray) -> np.ndarray:
    """Allowed row ids a scan has not yielded yet, ascending."""
    return np.flatnonzero(rows.mask & ~seen[:rows.size])


def sampled_misses(source, column: str, query: np.ndarray, rows: RowFilter,
                   seen: np.ndarray, lo: float | None, hi: float | None,
                   sample: int = CHECK_SAMPLE) -> tuple[float, int]:
    """Estimated number of allowed rows not yet seen that fall in [lo, hi]: score a random
    sample of them exactly and scale up. Returns (estimate, rows scored)."""
    rest = unseen(rows, seen)
    if len(rest) == 0:
        return 0.0, 0
    rng = np.random.default_rng(CHECK_SEED)
    # with replacement: an unbiased estimate without permuting the whole remainder
    pick = rest if len(rest) <= sample else rest[rng.integers(0, len(rest), sample)]
    _, metric = source.vector_column(column)
    d = distances(source.vectors(column, pick), query, metric)    # an estimate: float32 is enough
    hit = np.ones(len(d), dtype=bool)
    if lo is not None:
        hit &= d >= lo
    if hi is not None:
        hit &= d <= hi
    return float(hit.mean()) * len(rest), len(pick)


def scan_budget(n_live: int, params: dict[str, Any], options: PlannerOptions) -> int:
    """Rows an index stream may visit before the exact finish takes over: the `budget` knob,
    else max(budget_min_rows, budget_fraction x live rows) of the planner options."""
    if params.get("budget") is not None:
        return int(params["budget"])
    return max(options.budget_min_rows, int(options.budget_fraction * n_live))


def is_strict(scan) -> bool:
    """A strictly monotone access path (flat scan, sorted index): E = w = 1 is exact."""
    return getattr(scan, "default_E", 1) == 1 and getattr(scan, "default_w", 1) == 1


def stop_statistic(scan, params: dict[str, Any]) -> str:
    """Window statistic compared with the k-th filtered distance: "min" on relaxed scans
    (STOP_STAT_RELAXED), "median" (VBase) on strict ones, where the two coincide."""
    stat = params.get("stop_stat") or ("median" if is_strict(scan) else STOP_STAT_RELAXED)
    if stat not in ("median", "min"):
        raise ValueError(f"stop_stat={stat!r}; use 'median' or 'min'")
    return stat


def detector_params(scan, k: int, params: dict[str, Any], index=None
                    ) -> tuple[int, int | None]:
    """E and w for a scan: explicit params (w = an int or "growing"), else E = w = 1 for a
    strictly monotone path and, for a relaxed one (partition index), E = max(k, default_E)
    and a window of WINDOW_POSTINGS postings."""
    strict = is_strict(scan)
    E = params.get("E") or (1 if strict else max(int(getattr(scan, "default_E", 1)), k))
    w = params.get("w")
    if w is None:
        posting = getattr(getattr(index, "options", None), "target_posting", None)
        w = 1 if strict else WINDOW_POSTINGS * int(posting or DEFAULT_POSTING_ROWS)
    return max(1, int(E)), (None if w == "growing" else max(1, int(w)))


class TopK:
    """The k smallest (distance, row id) pairs seen so far; ties broken by smaller row id."""

    def __init__(self, k: int):
        self.k = int(k)
        self.ids = np.empty(0, dtype=np.int64)
        self.d = np.empty(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def full(self) -> bool:
        return len(self.ids) >= self.k

    @property
    def kth(self) -> float:
        """The k-th smallest distance held (+inf while fewer than k are held)."""
        return float(self.d.max()) if self.full and self.k > 0 else float("inf")

    def push(self, ids: np.ndarray, d: np.ndarray) -> None:
        if len(ids) == 0 or self.k == 0:
            return
        if self.full:
            keep = d <= self.kth
            ids, d = ids[keep], d[keep]
            if len(ids) == 0:
                return
        ids = np.concatenate([self.ids, ids])
        d = np.concatenate([self.d, d])
        if len(ids) > self.k:
            order = np.lexsort((ids, d))[:self.k]
            ids, d = ids[order], d[order]
        self.ids, self.d = ids, d

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.lexsort((self.ids, self.d))
        return self.ids[order], self.d[order]


def score_rows(source, column: str, query: np.ndarray, row_ids: np.ndarray,
               live_count: int | None = None) -> np.ndarray:
    """Distances of `row_ids` to the query on one vector column: one float32 BLAS product
    (the shortlist that is kept is re-scored in float64 by the callers)."""
    dim, metric = source.vector_column(column)
    q = query_vector(query, dim)
    row_ids = np.asarray(row_ids, dtype=np.int64)
    if len(row_ids) == 0:
        return np.empty(0, dtype=np.float64)
    n_live = live_count if live_count is not None else int(source.live_rowmask().sum())
    if len(row_ids) > GATHER_MAX_FRACTION * max(n_live, 1):
        all_ids, matrix = source.flat_rows(column)
        return distances(matrix, q, metric)[np.searchsorted(all_ids, row_ids)]
    return distances(source.vectors(column, row_ids), q, metric)


def rescore(source, column: str, query: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
    """Exact float64 distances for a few rows."""
    _, metric = source.vector_column(column)
    return exact_distances(source.vectors(column, row_ids), query, metric)


def exact_range_over(source, column: str, query: np.ndarray, row_ids: np.ndarray,
                     lo: float | None, hi: float | None, live_count: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `row_ids` with lo <= distance <= hi (float64-exact at the bounds)."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    d = score_rows(source, column, query, row_ids, live_count)
    slack = lambda x: RESCORE_SLACK * (1.0 + abs(x))
    ok = np.ones(len(d), dtype=bool)
    if lo is not None:
        ok &= d >= lo - slack(lo)
    if hi is not None:
        ok &= d <= hi + slack(hi)
    ids = row_ids[ok]
    d = rescore(source, column, query, ids)
    keep = np.ones(len(d), dtype=bool)
    if lo is not None:
        keep &= d >= lo
    if hi is not None:
        keep &= d <= hi
    return ids[keep], d[keep]


def exact_topk_over(source, column: str, query: np.ndarray, row_ids: np.ndarray, k: int,
                    live_count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among `row_ids`, re-scored in float64, nearest first (ties: smaller id)."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    margin = max(2 * k, k + SHORTLIST_MARGIN)
    if margin < len(row_ids):
        # float32 BLAS shortlist with a margin, then the float64 re-score of the shortlist
        d = score_rows(source, column, query, row_ids, live_count)
        row_ids = row_ids[np.argpartition(d, margin - 1)[:margin]]
    d = rescore(source, column, query, row_ids)
    top = TopK(k)
    top.push(row_ids, d)
    return top.result()


def first_sightings(seen: np.ndarray | None, ids: np.ndarray, d: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Drop rows already seen earlier in the scan (replicas) and mark the rest as seen."""
    if seen is None:
        return ids, d
    fresh = ~seen[ids]
    seen[ids] = True
    if fresh.all():
        return ids, d
    return ids[fresh], d[fresh]
