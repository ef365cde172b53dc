"""Distance-range query over one scan: every allowed row with lo <= d <= hi (ALGORITHMS.md §1).

Stop rule: the monotone phase is reached AND the median of the recent window exceeds hi.
On a strictly monotone path (flat, E = w = 1) that is the first distance past hi, so the
result is exact; on a partition index it is the relaxed rule, measured in bench/filtered.py.
"""
from __future__ import annotations

import numpy as np

from unidb.query.explain import Explain
from unidb.index.iterator import ScanIterator
from unidb.index.rowfilter import RowFilter
from unidb.query.monotone import MonotoneDetector
from unidb.query.operators import anti_correlated, first_sightings, tail_is_cheap


def in_range(d: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    ok = np.ones(len(d), dtype=bool)
    if lo is not None:
        ok &= d >= lo
    if hi is not None:
        ok &= d <= hi
    return ok


def stream_range(scan: ScanIterator, lo: float | None, hi: float | None,
                 rows: RowFilter | None, matches: int, E: int, w: int | None, budget: int,
                 explain: Explain, seen: np.ndarray | None = None, stop_stat: str = "median"
                 ) -> tuple[list, list, bool]:
    """Pull until the stop rule; return (id chunks, distance chunks, finished). `rows` is the
    query's RowFilter (None = every row); `finished` is False when the matching rows not yet
    seen must still be scored exactly."""
    det = MonotoneDetector(E, w)
    past = det.window_min_exceeds if stop_stat == "min" else det.median_exceeds
    out_ids, out_d = [], []
    visited = matched_seen = 0
    selectivity = matches / max(int(explain.rows_total), 1)
    explain.E, explain.w = E, w
    finished = True
    while True:
        batch = scan.next_batch()
        if batch is None:
            explain.stop_reason = "scan exhausted"
            finished = matched_seen >= matches     # rows the index does not hold: score them
            break
        ids, d = batch.row_ids, batch.distances
        visited += len(ids)
        det.observe(d)
        ids, d = first_sightings(seen, ids, d)          # a replicated row counts once
        ok = in_range(d, lo, hi)
        if rows is not None:
            allowed = rows.allows(ids)
            ok &= allowed
            matched_seen += int(allowed.sum())
        else:
            matched_seen += len(ids)
        if ok.any():
            out_ids.append(ids[ok])
            out_d.append(d[ok])
        if matched_seen >= matches:
            explain.stop_reason = "all matching rows seen"
            break
        if rows is not None and det.monotone and anti_correlated(matched_seen, visited,
                                                                  selectivity):
            explain.stop_reason = "correlation guard: visited rows match far less than the table"
            finished = False
            break
        if hi is not None and det.monotone and past(hi):
            explain.stop_reason = "monotone past max_distance"
            if tail_is_cheap(matches - matched_seen, visited):
                explain.details["exact_finish"] = "tail rule"
                finished = False
            break
        if visited >= budget:
            explain.stop_reason = "budget exhausted"
            explain.budget_exhausted = True
            finished = False
            break
    explain.candidates_visited += visited
    explain.effective_k_prime += visited
    explain.distances_computed += visited
    explain.monotone_step = det.phase_step
    return out_ids, out_d, finished


def sort_result(ids: list | np.ndarray, d: list | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate chunks and order by (distance, row id)."""
    ids = np.concatenate(ids) if isinstance(ids, list) and ids else np.asarray(ids, np.int64)
    d = np.concatenate(d) if isinstance(d, list) and d else np.asarray(d, np.float64)
    ids = ids.astype(np.int64, copy=False)
    order = np.lexsort((ids, d))
    return ids[order], d[order].astype(np.float64, copy=False)
