"""Score fusion of several ranked sources: RRF and normalised linear, truncated or exact.

Definitions (the brute-force functions `fuse_rrf` / `fuse_linear` ARE the specification; the
exact mode returns the same rows and bit-identical fused scores):

- A source's *full list* L_i is every row it ranks: for text/sparse every row matching a query
  term, for an exact dense source every row with a vector. Rank = 1-based position in L_i by
  score descending, ties by smaller row id.
- RRF: fused(d) = sum over sources i with d in L_i of 1 / (k + rank_i(d)); k = 60 by default
  (Cormack et al. 2009).
- Linear: fused(d) = sum over sources with d in L_i of w_i * norm_i(score_i(d)); rows absent
  from L_i contribute 0. normalize="minmax": (s - min_i) / (max_i - min_i) (1.0 when all scores
  are equal); "zscore": (s - mean_i) / std_i (0.0 when std_i = 0), statistics over L_i.
- Results: (row ids, fused) by fused descending, ties by smaller row id.

The exact mode (`exact_fused_topk`) pulls each source in rank order and stops as soon as no
row outside its current answer can still enter it (see its docstring). A *source* is anything
with this protocol (`RankedSource`):

    scan() -> ScanIterator        batches in EXACT rank order (distances = -score)
    scores_for(row_ids) -> float64 scores; NaN where the row is not in the full list
    score_stats() -> ScoreStats   count/min/max/mean/std of the full list (linear fusion only)
    ranks_for(row_ids) -> ranks   optional: exact 1-based ranks (0 = absent), or None when not
                                  cheap; lets RRF settle a row's rank without pulling deeper
    full_list() -> ScoresSource   optional: the whole list when held in memory (fast path)

`IndexSource` adapts a TextIndex/SparseIndex query, `ScoresSource` any full score array (an exact
flat dense search is one: scores = X @ q).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from unidb.errors import ValidationError
from unidb.index.rowfilter import allowed
from unidb.index.sparse.scan import Allow, ArrayScan, IndexScan, rank_rows
from unidb.kernels.sparse import top_ranked, count_ahead, rrf_exact_full, score_moments
from unidb.index.iterator import ScanIterator

RRF_K = 60          # Cormack et al.'s constant; small k (e.g. 2) over-rewards the top ranks
# First batch of a source's scan (later batches double). With k = 60 and limit 10 the RRF
# bound usually closes between depth 100 and 300 on SciFact: one or two rounds.
SOURCE_SCAN_FIRST = 64
# RRF: at most this many partial rows per round get their unknown ranks settled by counting.
RESOLVE_PER_ROUND = 16

Ranking = tuple[np.ndarray, np.ndarray]   # (row ids, scores)


@dataclass(frozen=True)
class ScoreStats:
    count: int
    min: float
    max: float
    mean: float
    std: float

    @staticmethod
    def of(scores_by_row: np.ndarray) -> "ScoreStats":
        """Statistics of a full list given in ascending row-id order (the order fixes the
        rounding of mean and std, so every path computes the same values)."""
        s = np.ascontiguousarray(scores_by_row, np.float64)
        if len(s) == 0:
            return ScoreStats(0, 0.0, 0.0, 0.0, 0.0)
        lo, hi, mean, std = score_moments(s)
        return ScoreStats(len(s), float(lo), float(hi), float(mean), float(std))


class RankedSource(Protocol):
    def scan(self) -> ScanIterator: ...
    def scores_for(self, row_ids: np.ndarray) -> np.ndarray: ...
    def score_stats(self) -> ScoreStats: ...


# ---------------------------------------------------------------------------- shared math
def _rank(rows: np.ndarray, scores: np.ndarray) -> Ranking:
    return rank_rows(np.asarray(rows, np.int64), np.asarray(scores, np.float64))


def _rrf_values(ranks: np.ndarray, k: float) -> np.ndarray:
    """ranks: (n_sources, n_rows), 0 = absent. Summed in source order (fixes rounding)."""
    out = np.zeros(ranks.shape[1])
    for r in ranks:
        out += np.where(r > 0, 1.0 / (k + np.maximum(r, 1)), 0.0)
    return out


def _normalize(s: np.ndarray, st: ScoreStats, normalize: str) -> np.ndarray:
    if normalize == "minmax":
        span = st.max - st.min
        return (s - st.min) / span if span > 0 else np.ones_like(s)
    if st.std > 0:
        return (s - st.mean) / st.std
    return np.zeros_like(s)


def _linear_values(scores: np.ndarray, stats: Sequence[ScoreStats], weights: Sequence[float],
                   normalize: str) -> np.ndarray:
    """scores: (n_sources, n_rows), NaN = absent (contributes 0)."""
    out = np.zeros(scores.shape[1])
    for s, st, w in zip(scores, stats, weights):
        present = ~np.isnan(s)
        out += np.where(present, w * _normalize(np.where(present, s, 0.0), st, normalize), 0.0)
    return out


def _check_linear(n: int, weights, normalize: str) -> list[float]:
    if normalize not in ("minmax", "zscore"):
        raise ValidationError(f"normalize must be 'minmax' or 'zscore', got {normalize!r}")
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    if len(w) != n:
        raise ValidationError(f"{len(w)} weights for {n} sources")
    if any(x < 0 or not np.isfinite(x) for x in w):
        raise ValidationError(f"weights must be finite and >= 0, got {w}")
    return w


def _stats_by_row(rows: np.ndarray, scores: np.ndarray) -> ScoreStats:
    if len(rows) > 1 and not (rows[1:] > rows[:-1]).all():
        order = np.argsort(rows, kind="stable")
        rows, scores = rows[order], scores[order]
    return ScoreStats.of(scores)


def _top_positions(rows: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n best entries (score desc, row id asc), best first, by a size-n heap
    (no full sort)."""
    return top_ranked(np.ascontiguousarray(rows, np.int64),
                       np.ascontiguousarray(scores, np.float64), 0, len(scores), n)


def _top(rows: np.ndarray, fused: np.ndarray, limit: int | None) -> Ranking:
    if limit is None:
        return _rank(rows, fused)
    p = _top_positions(rows, fused, limit)
    return rows[p], fused[p]


# ---------------------------------------------------------------------------- brute force
def fuse_rrf(rankings: Sequence[Ranking], k: float = RRF_K, limit: int | None = 10) -> Ranking:
    """Reciprocal rank fusion of (row ids, scores) lists (each re-ranked by score desc, row
    id asc); rows absent from a list get nothing from it."""
    ranked = [_rank(*r) for r in rankings]
    rows = np.unique(np.concatenate([r for r, _ in ranked] + [np.zeros(0, np.int64)]))
    ranks = np.zeros((len(ranked), len(rows)), np.int64)
    for i, (r, _) in enumerate(ranked):
        ranks[i, np.searchsorted(rows, r)] = np.arange(1, len(r) + 1)
    return _top(rows, _rrf_values(ranks, k), limit)


def fuse_linear(rankings: Sequence[Ranking], weights: Sequence[float] | None = None,
                normalize: str = "minmax", limit: int | None = 10) -> Ranking:
    """Weighted sum of per-list normalised scores (statistics over each list as given)."""
    w = _check_linear(len(rankings), weights, normalize)
    ranked = [_rank(*r) for r in rankings]
    rows = np.unique(np.concatenate([r for r, _ in ranked] + [np.zeros(0, np.int64)]))
    scores = np.full((len(ranked), len(rows)), np.nan)
    for i, (r, s) in enumerate(ranked):
        scores[i, np.searchsorted(rows, r)] = s
    stats = [_stats_by_row(r, s) for r, s in ranked]
    return _top(rows, _linear_values(scores, stats, w, normalize), limit)


# ---------------------------------------------------------------------------- sources
class IndexSource:
    """A TextIndex / SparseIndex query as a fusion source.

    IndexSource(text_index, "query text") or IndexSource(sparse_index, indices, values).
    When the planner would score the query term-at-a-time anyway (small segments), the full
    score list is computed once and the source behaves as an ScoresSource (cheaper random
    access and ranked pulls); otherwise it pulls pruned top-k batches and scores rows by
    binary search in the postings."""

    def __init__(self, index, *query, allow: Allow | None = None,
                 first: int = SOURCE_SCAN_FIRST):
        self.index = index
        self.allow = allow
        self.first = first
        self._terms, self._qw = index.query_terms(*query)   # analyse once
        full = index._exhaustive_list(self._terms, self._qw, allow)
        self._full = ScoresSource(*full, first=first) if full is not None else None
        self._stats: ScoreStats | None = None

    def scan(self) -> ScanIterator:
        if self._full is not None:
            return self._full.scan()
        return IndexScan(self.index, self._terms, self._qw, self.allow, self.first)

    def scores_for(self, row_ids: np.ndarray) -> np.ndarray:
        if self._full is not None:
            return self._full.scores_for(row_ids)
        s = self.index._scores_for(self._terms, self._qw, row_ids)
        if self.allow is not None and len(row_ids):
            s[~allowed(self.allow, row_ids)] = np.nan
        return s

    def score_stats(self) -> ScoreStats:
        if self._full is not None:
            return self._full.score_stats()
        if self._stats is None:   # needs the full list: one exhaustive pass over the postings
            r, s = self.index._all_scores(self._terms, self._qw, self.allow)
            self._stats = _stats_by_row(r, s)
        return self._stats

    def upper_bound(self) -> float:
        return self.index._upper_bound(self._terms, self._qw)

    def ranks_for(self, row_ids: np.ndarray) -> np.ndarray | None:
        """Exact ranks when the full list is materialised, else None (not cheap here)."""
        return self._full.ranks_for(row_ids) if self._full is not None else None

    def full_list(self) -> "ScoresSource | None":
        return self._full


class ScoresSource:
    """A source from a full score list (row ids, scores) — e.g. exact flat dense search."""

    def __init__(self, row_ids: np.ndarray, scores: np.ndarray, first: int = SOURCE_SCAN_FIRST):
        self.rows = np.asarray(row_ids, np.int64)
        self.scores = np.asarray(scores, np.float64)
        self._first = first
        self._sorted: np.ndarray | None = None
        self._order: np.ndarray | None = None
        self._stats: ScoreStats | None = None

    @classmethod
    def dense(cls, vectors: np.ndarray, query: np.ndarray, row_ids: np.ndarray | None = None
              ) -> "ScoresSource":
        """Exact inner-product (cosine on unit vectors) scores of every row."""
        scores = vectors @ np.asarray(query, vectors.dtype)
        if row_ids is not None:
            return cls(row_ids, scores)
        src = cls(np.arange(len(vectors)), scores)
        src._order = src.rows        # rows are positions: already in row order
        return src

    def scan(self) -> ScanIterator:
        return ArrayScan(self.rows, self.scores, self._first)

    def scores_for(self, row_ids: np.ndarray) -> np.ndarray:
        row_ids = np.asarray(row_ids, np.int64)
        out = np.full(len(row_ids), np.nan)
        if len(self.rows) == 0:
            return out
        if self._sorted is None:
            ascending = len(self.rows) < 2 or bool((self.rows[1:] > self.rows[:-1]).all())
            self._sorted = np.zeros(0, np.int64) if ascending else \
                np.argsort(self.rows, kind="stable")
        if len(self._sorted) == 0:
            idx = np.minimum(np.searchsorted(self.rows, row_ids), len(self.rows) - 1)
        else:
            pos = np.minimum(np.searchsorted(self.rows, row_ids, sorter=self._sorted),
                             len(self.rows) - 1)
            idx = self._sorted[pos]
        hit = self.rows[idx] == row_ids
        out[hit] = self.scores[idx[hit]]
        return out

    def score_stats(self) -> ScoreStats:
        if self._stats is None:
            self._stats = _stats_by_row(self.rows, self.scores)
        return self._stats

    def ranks_for(self, row_ids: np.ndarray) -> np.ndarray:
        """Exact 1-based rank of each row in the full list (0 = absent), by counting."""
        row_ids = np.asarray(row_ids, np.int64)
        s = self.scores_for(row_ids)
        out = np.zeros(len(row_ids), np.int64)
        j = np.flatnonzero(~np.isnan(s))
        if len(j):
            out[j] = count_ahead(self.scores, self.rows, s[j], row_ids[j]) + 1
        return out

    def upper_bound(self) -> float:
        return float(self.scores.max()) if len(self.scores) else 0.0

    def full_list(self) -> "ScoresSource":
        return self

    def row_order(self) -> np.ndarray:
        """Permutation sorting the list by row id (identity when already ascending)."""
        if self._order is None:
            ascending = len(self.rows) < 2 or bool((self.rows[1:] > self.rows[:-1]).all())
            self._order = np.arange(len(self.rows)) if ascending else \
                np.argsort(self.rows, kind="stable")
        return self._order


# ---------------------------------------------------------------------------- exact mode
def exact_fused_topk(sources: Sequence[RankedSource], method: str = "rrf", *, k: float = RRF_K,
                     weights: Sequence[float] | None = None, normalize: str = "minmax",
                     limit: int = 10, info: dict | None = None) -> Ranking:
    """The fused top-`limit` over the sources' FULL lists, pulling each only as deep as needed.

    All sources are pulled round-robin, one batch each per round (batches double in size).
    Every newly seen row gets its score in every source by random access (`scores_for`).

    linear (threshold algorithm, Fagin et al.): a seen row's fused score is exact. An unseen
    row scores at most the current score of source i in it (or is absent: 0), so
    T = sum_i w_i * max(0, norm_i(last score pulled from i)) bounds every unseen row (0 for an
    exhausted source). Stop once the limit-th fused score exceeds T.

    rrf: rank_i(d) is known once d has been pulled from i; d absent from L_i (scores_for NaN)
    gets 0 from i; otherwise rank_i(d) > depth_i, so its contribution is at most
    1 / (k + depth_i + 1). A row's fused score therefore lies in [known part, known part +
    sum of those bounds], an unseen row's is at most sum_i 1 / (k + depth_i + 1) over sources
    not exhausted. The most promising partial rows (up to RESOLVE_PER_ROUND per round) get
    their missing ranks settled by counting in sources offering `ranks_for`. Stop once `limit`
    fully known rows exist and the limit-th of them beats every other row's upper bound
    (strictly, so ties by row id are settled on exact values).

    When every source holds its full list in memory (`full_list()` returns a ScoresSource),
    the same bounds run over whole top-D prefixes instead of batch pulls (RRF in one numba
    kernel), retrying with D * 4 until they close.
    """
    if method not in ("rrf", "linear"):
        raise ValidationError(f"method must be 'rrf' or 'linear', got {method!r}")
    n = len(sources)
    if n == 0 or limit <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    if method == "linear":
        w = _check_linear(n, weights, normalize)
    full = [s.full_list() if hasattr(s, "full_list") else None for s in sources]
    if all(f is not None for f in full):
        first = min(f._first for f in full)
        if method == "rrf":
            return _exact_rrf_full(full, k, limit, first, info)
        return _exact_linear_full(full, w, normalize, limit, first, info)
    if method == "linear":
        stats = [s.score_stats() for s in sources]
    resolve = method == "rrf" and all(hasattr(s, "ranks_for") for s in sources)
    scans = [s.scan() for s in sources]
    exhausted = [False] * n
    depth = [0] * n
    last = [np.inf] * n
    rows = np.zeros(0, np.int64)              # seen rows, in order of first sight
    by_row = np.zeros(0, np.int64)            # argsort of rows, for position lookups
    ranks = np.zeros((n, 0), np.int64)        # rrf: known rank, 0 = unknown/absent
    present = np.zeros((n, 0), bool)          # row is in source i's full list
    scores = np.zeros((n, 0))                 # exact per-source scores (NaN = absent)
    rounds = 0
    while True:
        rounds += 1
        for i, scan in enumerate(scans):
            if exhausted[i]:
                continue
            b = scan.next_batch()
            if b is None or len(b) == 0:
                exhausted[i] = True
                continue
            if len(rows):
                p = np.minimum(np.searchsorted(rows, b.row_ids, sorter=by_row), len(rows) - 1)
                known_pos = by_row[p]
                is_new = rows[known_pos] != b.row_ids
            else:
                is_new = np.ones(len(b), bool)
            if is_new.any():
                new_rows = b.row_ids[is_new]
                sc = np.empty((n, len(new_rows)))
                for j, src in enumerate(sources):
                    # the pulling source's scores come with the batch: no random access
                    sc[j] = -b.distances[is_new] if j == i else src.scores_for(new_rows)
                rows = np.concatenate((rows, new_rows))
                by_row = np.argsort(rows, kind="stable")
                scores = np.concatenate((scores, sc), axis=1)
                present = np.concatenate((present, ~np.isnan(sc)), axis=1)
                ranks = np.concatenate((ranks, np.zeros((n, len(new_rows)), np.int64)), axis=1)
            pos = by_row[np.searchsorted(rows, b.row_ids, sorter=by_row)]
            ranks[i, pos] = np.arange(depth[i] + 1, depth[i] + len(b) + 1)
            depth[i] += len(b)
            last[i] = float(-b.distances[-1])
        all_done = all(exhausted)
        if method == "linear":
            fused = _linear_values(scores, stats, w, normalize)
            top_r, top_f = _top(rows, fused, limit)
            if all_done:
                break
            bound = 0.0
            for i in range(n):
                if not exhausted[i]:
                    v = float(_normalize(np.array([last[i]]), stats[i], normalize)[0])
                    bound += w[i] * max(0.0, v)
            if len(top_r) >= limit and top_f[-1] > bound:
                break
        else:
            unknown = present & (ranks == 0)
            known = ~unknown.any(axis=0)
            fused = _rrf_values(ranks, k)     # exact for known rows, lower bound otherwise
            top_r, top_f = _top(rows[known], fused[known], limit)
            if all_done:
                break
            tail = np.array([1.0 / (k + depth[i] + 1) if not exhausted[i] else 0.0
                             for i in range(n)])
            partial_ub = fused + (unknown * tail[:, None]).sum(axis=0)
            if resolve and (~known).any():
                # Settle the unknown ranks of the most promising partial rows by counting in
                # sources that hold their full list (ranks_for), instead of pulling deeper.
                cand = np.flatnonzero(~known)
                cand = cand[np.argsort(-partial_ub[cand], kind="stable")[:RESOLVE_PER_ROUND]]
                if len(top_r) >= limit:
                    cand = cand[partial_ub[cand] >= top_f[-1]]
                for i in range(n):
                    sel = cand[unknown[i, cand]]
                    if len(sel) and (r := sources[i].ranks_for(rows[sel])) is not None:
                        ranks[i, sel] = r
                        present[i, sel] = r > 0
                unknown = present & (ranks == 0)
                known = ~unknown.any(axis=0)
                fused = _rrf_values(ranks, k)
                partial_ub = fused + (unknown * tail[:, None]).sum(axis=0)
                top_r, top_f = _top(rows[known], fused[known], limit)
            if len(top_r) >= limit:
                ub_unseen = float(tail.sum())
                others = partial_ub[~known]
                best_other = max(ub_unseen, float(others.max()) if len(others) else 0.0)
                if top_f[-1] > best_other:
                    break
    if info is not None:
        info.update(rounds=rounds, depths=list(depth), seen=len(rows))
    return top_r, top_f


def _exact_rrf_full(srcs: list[ScoresSource], k: float, limit: int, first: int,
                    info: dict | None) -> Ranking:
    """Exact RRF when every source holds its full list in memory (the common small case):
    the same bounds as the general loop, run in one kernel (kernels.sparse.rrf_exact_full)."""
    offs = np.zeros(len(srcs) + 1, np.int64)
    offs[1:] = np.cumsum([len(f.rows) for f in srcs])
    rows = np.concatenate([f.rows for f in srcs])
    scores = np.concatenate([f.scores for f in srcs])
    perm = np.concatenate([f.row_order() for f in srcs])
    r, fused, depth, rounds = rrf_exact_full(rows, scores, perm, offs, float(k), int(limit),
                                             int(first), RESOLVE_PER_ROUND)
    if info is not None:
        info.update(rounds=rounds, depths=[min(depth, len(f.rows)) for f in srcs])
    return r, fused


def _exact_linear_full(srcs: list[ScoresSource], w: list[float], normalize: str, limit: int,
                       first: int, info: dict | None) -> Ranking:
    """Exact linear fusion when every source holds its full list: the threshold algorithm with
    whole top-D prefixes (partial selection) instead of batch-by-batch pulls; D x 4 on failure."""
    stats = [f.score_stats() for f in srcs]
    depth = max(first, limit)
    rounds = 0
    while True:
        rounds += 1
        pos = [_top_positions(f.rows, f.scores, depth) for f in srcs]
        cand = np.unique(np.concatenate([f.rows[p] for f, p in zip(srcs, pos)]))
        scores = np.stack([f.scores_for(cand) for f in srcs])
        top_r, top_f = _top(cand, _linear_values(scores, stats, w, normalize), limit)
        bound, done = 0.0, True
        for f, p, st, wi in zip(srcs, pos, stats, w):
            if len(p) < len(f.rows):          # unseen rows of f score <= its depth-th score
                done = False
                last = _normalize(np.array([f.scores[p[-1]]]), st, normalize)[0]
                bound += wi * max(0.0, float(last))
        if done or (len(top_r) >= limit and top_f[-1] > bound):
            if info is not None:
                info.update(rounds=rounds, depths=[len(p) for p in pos], seen=len(cand))
            return top_r, top_f
        depth *= 4
