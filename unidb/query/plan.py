"""Cost-based planning of vector queries with scalar filters (ALGORITHMS.md §1, items 1-4).

    1. a range predicate on a column with a SortedIndex that selects very few rows
         -> "scalar-driven": take those rows from the index, check the rest of the filter on
            them only, score them exactly;
    2. else evaluate the filter to a row mask and count the matches exactly;
         matches <= exact threshold (or no vector index) -> "exact-filtered": score just them;
    3. else "index-stream": stream the vector index with the filter and the filter-aware
       relaxed-monotonic stop; if the budget runs out, finish exactly over unseen matches.

Every plan returns min(k, matching rows) rows. The thresholds below come from
bench/filtered.py on the 2-core development machine (docs/query-execution.md).

A `Plan` is built by the entry points (unidb/query/planner.py) and by the similarity join
(unidb/query/join.py, one plan of the right side for every left row); both import this module.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from unidb.errors import ValidationError
from unidb.query.explain import Explain
from unidb.index.rowfilter import RowFilter
from unidb.query.operators import (RANGE_MISS_TOLERANCE, TopK, detector_params, evaluated,
                                   exact_range_over, exact_topk_over, rescore, sampled_misses,
                                   scan_budget, stop_statistic, unseen)
from unidb.query.range import sort_result, stream_range
from unidb.query.topk import finish_exact, stream_topk

# The cost thresholds of plan choice are `PlannerOptions` (unidb/options.py: exact_max_cells,
# scalar_drive_selectivity, postfilter_*), read from the data source a query runs on
# (`source.planner_options`), so each open database can tune its own. Why each default:
# exact scoring of the matching rows is chosen while (matching rows x dimension) stays under
# exact_max_cells: its cost grows with the matches, the index's stays ~flat (bench/filtered.py,
# crossover sweep). 2^21 cells = 16,384 rows at 128-d: synth200k's recall-driven crossover
# (the stream reaches recall 0.95 at 7% = 14,000 rows) and synth1m's latency crossover (1-2%
# = 10,000-20,000 rows, stream recall >= 0.977 there); 2,675 rows at MNIST's 784-d.
# A range predicate on an indexed scalar column drives the plan when it selects at most
# scalar_drive_selectivity of the live rows: reading those rows from the sorted index and
# checking the rest of the filter on them avoids evaluating the filter over the whole table.
# Index fast path for filters that keep many rows: one batched index search for the
# k' = k / selectivity * postfilter_oversample nearest rows (at most postfilter_max_k), then
# the filter. If at least min(k, matches) rows survive, they are the filtered top-k up to the
# index's own recall (any matching row nearer than the k-th survivor is itself among the k'
# nearest); otherwise the query falls through to the relaxed-monotone stream. Measured on
# synth200k: the stream costs ~5-7 ms at >= 10% selectivity where one search costs ~1-2.5 ms
# at equal recall. Tried only from postfilter_min_selectivity (0.1) up (k' <= 400), where it
# was measured: recall 0.989-1.0 on synth200k, 0.953-0.97 on synth1m.

PLANS = ("exact", "index", "scalar", "postfilter")


def plan_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of a query's knobs with force_plan checked ("flat" is spelled "exact")."""
    p = dict(params or {})
    fp = p.get("force_plan")
    if fp == "flat":
        p["force_plan"] = "exact"
    if p.get("force_plan") not in (None, *PLANS):
        raise ValidationError(f"force_plan={fp!r}; use one of 'flat', 'index', 'scalar'")
    return p


def _scan_knobs(params: dict[str, Any]) -> dict[str, Any]:
    """Options of the index's stream scan. nprobe=n reads the n nearest partitions (as in a
    plain index search); matching rows beyond them are then scored by the exact finish."""
    knobs = {k: params[k] for k in ("eps2", "max_partitions") if params.get(k) is not None}
    if params.get("nprobe") is not None:
        knobs["max_partitions"] = params["nprobe"]
    knobs.update(params.get("scan_knobs") or {})
    return knobs


def _scalar_candidates(source, expr, n_live: int, params: dict[str, Any]):
    """(column, bounds, row ids) of the most selective indexed range in `expr`, if it qualifies."""
    if expr is None or not hasattr(expr, "bounds_for") or not hasattr(expr, "columns"):
        return None
    best = None
    for c in sorted(expr.columns()):
        idx = source.scalar_index(c)
        b = expr.bounds_for(c)
        if idx is None or b is None:
            continue
        b = _bounds_in_key_type(b, getattr(idx, "keys", None))
        cnt = idx.count_range(*b)
        if best is None or cnt < best[0]:
            best = (cnt, c, b, idx)
    if best is None:
        return None
    cnt, c, b, idx = best
    if params.get("force_plan") != "scalar" and \
            cnt > source.planner_options.scalar_drive_selectivity * n_live:
        return None
    return c, b, idx.range_rows(*b)


def _bounds_in_key_type(b: tuple, keys: np.ndarray | None) -> tuple:
    """Bounds that select at least every matching row from a sorted index. Its keys are float64,
    so an Int64 key past 2^53 is stored rounded (by at most half a float step) and an exact
    bound can cut it off; one float step outward, inclusive, cannot. The extra rows this may
    admit are dropped when the filter is checked on the candidates."""
    lo, hi, lo_inc, hi_inc = b
    if keys is None or keys.dtype.kind != "f":
        return b
    if lo is not None:
        lo, lo_inc = float(np.nextafter(float(lo), -np.inf)), True
    if hi is not None:
        hi, hi_inc = float(np.nextafter(float(hi), np.inf)), True
    return lo, hi, lo_inc, hi_inc


def _filter_rows(source, expr, rows: np.ndarray) -> np.ndarray:
    """The rows of `rows` that are live and match `expr`: evaluated on those rows only when the
    source can (ArraySource), else read from the filter evaluated once on every row."""
    if hasattr(source, "filter_rows"):
        return rows[source.filter_rows(expr, rows)]
    return rows[source.row_filter(expr).allows(rows)]


def select_rows(source, expr, params: dict[str, Any], n_live: int) -> RowFilter:
    """The query's RowFilter, its filter evaluated once (plan items 1-2): on the few rows an
    indexed range selects when one qualifies ("scalar-driven"), else on every row. A RowFilter
    passes through (its caller evaluated the filter already)."""
    if isinstance(expr, RowFilter):
        return expr
    if params.get("force_plan") in (None, "scalar"):
        drive = _scalar_candidates(source, expr, n_live, params)
        if drive is not None:
            c, b, cand = drive
            return RowFilter.from_rows(
                _filter_rows(source, expr, cand), len(source.live_rowmask()),
                driven_by=f"range on indexed column {c!r} {b} selects {len(cand):,} rows "
                          f"(<= {source.planner_options.scalar_drive_selectivity:.1%} of "
                          f"live rows)")
    return evaluated(source, expr)


class Plan:
    """The filter stage shared by every operator: which rows match and which path to take.

    `expr` is a filter (evaluated here, once) or the query's RowFilter (evaluated by the
    caller, once for all the query vectors of a request)."""

    def __init__(self, source, column: str, expr, params: dict[str, Any], explain: Explain,
                 k: int | None):
        self.source, self.column, self.params, self.explain = source, column, params, explain
        self.n_live = int(source.live_rowmask().sum())
        explain.rows_total = self.n_live
        force = params.get("force_plan")
        with explain.stage("filter"):
            self.rows = select_rows(source, expr, params, self.n_live)
        self.matches = self.rows.count
        explain.rows_matched = self.matches
        if self.rows.driven_by is not None:
            self.kind = "scalar"
            explain.plan = "scalar-driven"
            explain.reason = self.rows.driven_by
            return
        index = source.vector_index(column)
        dim, _ = source.vector_column(column)
        opts = source.planner_options
        threshold = max(1, opts.exact_max_cells // max(dim, 1))
        if force == "exact" or (force is None and self.matches <= threshold) \
                or index is None:
            self.kind = "exact"
            explain.plan = "exact-filtered"
            explain.reason = ("forced" if force == "exact" else
                              "no vector index" if index is None else
                              f"{self.matches:,} matching rows <= threshold {threshold:,}")
        else:
            self.kind = "index"
            self.index = index
            explain.plan = "index-stream"
            explain.reason = ("forced" if force == "index" else
                              f"{self.matches:,} matching rows > threshold {threshold:,}")
            # the search fast path is tried first unless the stream was forced
            self.try_postfilter = (force != "index" and hasattr(index, "search") and
                                   self.matches >= opts.postfilter_min_selectivity * self.n_live)


def _open_scan(plan: Plan, q: np.ndarray):
    return plan.index.scan(q, **_scan_knobs(plan.params))


def _postfilter(plan: Plan, q: np.ndarray, k_eff: int):
    """The index fast path: (ids, distances) of the filtered top-k, or None to fall through."""
    explain = plan.explain
    sel = plan.matches / max(plan.n_live, 1)
    opts = plan.source.planner_options
    kprime = int(min(opts.postfilter_max_k,
                     max(k_eff, np.ceil(k_eff / sel * opts.postfilter_oversample))))
    with explain.stage("index-search"):
        ids, _ = plan.index.search(q[None, :], kprime, **_search_knobs(plan.params))
    ids = ids[0][ids[0] >= 0]
    explain.candidates_visited += len(ids)
    explain.effective_k_prime += kprime
    hit = ids[plan.rows.allows(ids)]
    if len(hit) < k_eff:
        explain.details["postfilter"] = f"k'={kprime}: {len(hit)} of {k_eff} rows; streaming"
        return None
    d = rescore(plan.source, plan.column, q, hit)
    explain.distances_computed += len(hit)
    top = TopK(k_eff)
    top.push(hit, d)
    explain.plan = "index-postfilter"
    explain.stop_reason = f"k'={kprime} nearest held {len(hit)} matching rows"
    return top.result()


def _search_knobs(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in ("nprobe", "eps2", "max_partitions")
            if params.get(k) is not None}


def topk_planned(plan: Plan, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, distances) of the min(k, matches) nearest matching rows, on the plan's path."""
    source, column, explain, params = plan.source, plan.column, plan.explain, plan.params
    k_eff = min(k, plan.matches)
    explain.k, explain.k_effective = k, k_eff
    fast = None
    if plan.kind == "index" and k_eff > 0 and (plan.try_postfilter
                                               or params.get("force_plan") == "postfilter"):
        fast = _postfilter(plan, q, k_eff)
    if fast is not None:
        ids, d = fast
    elif plan.kind in ("exact", "scalar"):
        with explain.stage("exact-scan"):
            rows = plan.rows.row_ids()
            ids, d = exact_topk_over(source, column, q, rows, k_eff, plan.n_live)
        explain.candidates_visited = explain.distances_computed = len(rows)
        explain.stop_reason = "exact over matching rows"
    else:
        seen = np.zeros(plan.rows.size, dtype=bool)
        with explain.stage("index-stream"):
            scan = _open_scan(plan, q)
            E, w = detector_params(scan, k_eff, params, plan.index)
            top, seen, done = stream_topk(scan, k, plan.rows, plan.matches, E, w,
                                          scan_budget(plan.n_live, params,
                                                      plan.source.planner_options),
                                          explain, seen, stop_statistic(scan, params))
        if not done:
            top = finish_exact(source, column, q, top, plan.rows, seen, explain)
        ids, d = top.result()
    if len(ids) != k_eff:      # the completeness guarantee is an invariant, never a hope
        raise AssertionError(f"top-k returned {len(ids)} rows, guaranteed {k_eff}")
    explain.rows_returned = len(ids)
    return ids, d


def range_planned(plan: Plan, q: np.ndarray, lo: float | None, hi: float | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, distances) of every matching row with lo <= distance <= hi, nearest first."""
    source, column, explain, params = plan.source, plan.column, plan.explain, plan.params
    if plan.kind in ("exact", "scalar"):
        with explain.stage("exact-scan"):
            rows = plan.rows.row_ids()
            ids, d = sort_result(*exact_range_over(source, column, q, rows, lo, hi, plan.n_live))
        explain.candidates_visited = explain.distances_computed = len(rows)
        explain.stop_reason = "exact over matching rows"
    else:
        seen = np.zeros(plan.rows.size, dtype=bool)
        with explain.stage("index-stream"):
            scan = _open_scan(plan, q)
            E, w = detector_params(scan, 1, params, plan.index)
            chunks_i, chunks_d, done = stream_range(scan, lo, hi, plan.rows, plan.matches, E, w,
                                                    scan_budget(plan.n_live, params,
                                                                plan.source.planner_options),
                                                    explain,
                                                    seen, params.get("stop_stat", "median"))
        if done and explain.stop_reason.startswith("monotone"):
            with explain.stage("completeness-check"):
                found = sum(len(c) for c in chunks_i)
                missed, scored = sampled_misses(source, column, q, plan.rows, seen, lo, hi)
            explain.distances_computed += scored
            explain.details["estimated_unseen_in_range"] = round(missed, 1)
            if missed > RANGE_MISS_TOLERANCE * max(found + missed, 1):
                explain.stop_reason += "; sampled check found more rows in range"
                done = False
        if not done:
            with explain.stage("exact-finish"):
                rest = unseen(plan.rows, seen)
                ids, d = exact_range_over(source, column, q, rest, lo, hi, plan.n_live)
                chunks_i.append(ids)
                chunks_d.append(d)
            explain.exact_finish_rows += len(rest)
            explain.distances_computed += len(rest)
        ids, d = sort_result(chunks_i, chunks_d)
    explain.rows_returned = len(ids)
    return ids, d


__all__ = ["Plan", "select_rows", "topk_planned", "range_planned", "plan_params", "PLANS"]
