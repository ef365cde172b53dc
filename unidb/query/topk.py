"""Filtered top-k over one scan with the relaxed-monotonic, filter-aware stop (ALGORITHMS.md §1).

    for (rid, d) in scan:   phase = detector.observe(d)          # observe BEFORE filtering
                            if allowed(rid): topk.push(d, rid)
                            stop when phase AND k rows held AND median(window) > k-th distance

The detector sees every visited distance, filtered or not: the traversal position is a
property of the scan, not of the filter. unidb's stricter stop (the median must also pass the
k-th *filtered* distance) keeps a scan going while matching rows may still be ahead. When the
budget runs out, or the scan ends, with fewer rows than guaranteed, the matching rows not yet
seen are scored exactly, so a result never silently holds fewer than min(k, matches) rows.
"""
from __future__ import annotations

import numpy as np

from unidb.query.explain import Explain
from unidb.index.iterator import ScanIterator
from unidb.index.rowfilter import RowFilter
from unidb.query.monotone import MonotoneDetector
from unidb.query.operators import (TopK, anti_correlated, exact_topk_over, first_sightings,
                                    tail_is_cheap, unseen)


def stream_topk(scan: ScanIterator, k: int, rows: RowFilter | None, matches: int,
                E: int, w: int | None, budget: int, explain: Explain,
                seen: np.ndarray | None = None, stop_stat: str = "median"
                ) -> tuple[TopK, np.ndarray, bool]:
    """Pull from `scan` until the stop rule holds; return (top-k, seen mask, finished).

    `rows` is the query's RowFilter (None = every row); `matches` the exact number of allowed
    rows, so the scan also stops once all of them are held. `finished` is False when the
    budget ran out or the scan ended before the guarantee was met."""
    k_eff = min(k, matches)
    top = TopK(k_eff)
    matched_seen = 0
    exhausted = guard = False
    n_rows = rows.size if rows is not None else 0
    selectivity = matches / max(int(explain.rows_total) or n_rows, 1)
    det = MonotoneDetector(E, w)
    past = det.window_min_exceeds if stop_stat == "min" else det.median_exceeds
    visited = 0
    explain.E, explain.w = E, w
    while True:
        if k_eff == 0:
            explain.stop_reason = "nothing to find"
            break
        batch = scan.next_batch()
        if batch is None:
            explain.stop_reason = "scan exhausted"
            exhausted = True
            break
        ids, d = batch.row_ids, batch.distances
        visited += len(ids)
        det.observe(d)
        ids, d = first_sightings(seen, ids, d)          # a replicated row counts once
        if rows is not None:
            ok = rows.allows(ids)
            ids, d = ids[ok], d[ok]
        matched_seen += len(ids)
        top.push(ids, d)
        if matched_seen >= matches:
            explain.stop_reason = "all matching rows seen"
            break
        if det.monotone and anti_correlated(matched_seen, visited, selectivity):
            explain.stop_reason = "correlation guard: visited rows match far less than the table"
            guard = True
            break
        if det.monotone and top.full and past(top.kth):
            explain.stop_reason = "filter-aware monotone stop"
            break
        if visited >= budget:
            explain.stop_reason = "budget exhausted"
            explain.budget_exhausted = True
            break
    explain.candidates_visited += visited
    explain.effective_k_prime += visited
    explain.distances_computed += visited
    explain.monotone_step = det.phase_step
    explain.details["visited_selectivity"] = matched_seen / visited if visited else None
    # rows the index does not hold (exhausted early) or a cheap tail: score them exactly
    tail = guard or tail_is_cheap(matches - matched_seen, visited) \
        or (exhausted and matched_seen < matches)
    if tail:
        explain.details["exact_finish"] = ("correlation guard" if guard else
                                           "scan ended early" if exhausted else "tail rule")
    return top, seen, len(top) >= k_eff and not explain.budget_exhausted and not tail


def finish_exact(source, column: str, query: np.ndarray, top: TopK, rows: RowFilter,
                 seen: np.ndarray, explain: Explain) -> TopK:
    """Score the allowed rows not yet seen exactly and merge them into `top`."""
    rest = unseen(rows, seen)
    with explain.stage("exact-finish"):
        ids, d = exact_topk_over(source, column, query, rest, top.k)
    explain.exact_finish_rows += len(rest)
    explain.distances_computed += len(rest)
    top.push(ids, d)
    return top
