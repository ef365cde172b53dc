"""Filtered top-k and distance range through the planner: properties on random data and
recall on clustered data with correlated / anti-correlated filters."""
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings, strategies as st

from unidb.errors import ValidationError
from unidb.evaluate import recall_at_k
from unidb.index.flat.scan import FlatScan, exact_distances
from unidb.index.iterator import ScanBatch
from unidb.query.array_source import ArraySource
from unidb.query.planner import execute_range, execute_topk


class FlatIndex:
    """A vector 'index' whose scan is the exact flat scan (strictly monotone, E = w = 1)."""

    def __init__(self, source, column, batch_size=16):
        self.ids, self.X = source.flat_rows(column)
        self.metric = source.vector_column(column)[1]
        self.batch_size = batch_size

    def scan(self, q, **knobs):
        return FlatScan(self.ids, self.X, self.metric, q, batch_size=self.batch_size)


class ToyIVFScan:
    default_E = 10

    def __init__(self, ivf, q):
        self.ivf, self.q = ivf, q
        self.default_w = ivf.default_w
        cd = exact_distances(ivf.centroids, q, ivf.metric)
        self.order = list(np.argsort(cd))
        self.left = len(ivf.ids)

    def cost(self):
        return self.left

    def next_batch(self):
        if not self.order:
            return None
        p = self.order.pop(0)
        rows = self.ivf.lists[p]
        self.left -= len(rows)
        return ScanBatch(self.ivf.ids[rows], exact_distances(self.ivf.X[rows], self.q, self.ivf.metric))


class ToyIVF:
    """Test stand-in for a partition index: random centroids, one partition per row,
    partitions yielded in increasing centroid distance (a relaxed-monotone scan)."""

    def __init__(self, source, column, nlist, seed=0):
        self.ids, self.X = source.flat_rows(column)
        self.metric = source.vector_column(column)[1]
        rng = np.random.default_rng(seed)
        nlist = max(1, min(nlist, len(self.ids)))
        C = self.X[rng.choice(len(self.ids), nlist, replace=False)].astype(np.float64)
        for _ in range(6):                                   # a few Lloyd iterations
            assign = self._assign(C)
            for c in np.unique(assign):
                C[c] = self.X[assign == c].mean(0)
        self.centroids = C
        assign = self._assign(C)
        self.lists = [np.flatnonzero(assign == c) for c in range(nlist)]
        self.default_w = max(1, len(self.ids) // nlist)

    def _assign(self, C):
        X = self.X.astype(np.float64)
        return ((X ** 2).sum(1)[:, None] - 2 * X @ C.T + (C ** 2).sum(1)[None]).argmin(1)

    def scan(self, q, **knobs):
        return ToyIVFScan(self, q)


def brute(X, q, allow, k, metric="l2"):
    ids = np.flatnonzero(allow)
    d = exact_distances(X[ids], q, metric)
    o = np.lexsort((ids, d))[:k]
    return ids[o], d[o]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), dim=st.integers(1, 8), k=st.integers(0, 40),
       sel=st.floats(0, 1), seed=st.integers(0, 10_000),
       plan=st.sampled_from(["flat", "index-flat", "index-ivf", None]),
       budget=st.sampled_from([None, 1, 37]), metric=st.sampled_from(["l2", "cosine", "ip"]))
def test_topk_properties(n, dim, k, sel, seed, plan, budget, metric):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    deleted = rng.choice(n, n // 10, replace=False)
    src = ArraySource({"v": X}, {"v": metric}, deleted=deleted)
    allow_expr = rng.random(n) < sel
    if plan == "index-flat":
        src.set_vector_index("v", FlatIndex(src, "v", batch_size=int(rng.integers(1, 20))))
    elif plan in ("index-ivf", None):
        src.set_vector_index("v", ToyIVF(src, "v", nlist=max(1, n // 20), seed=seed))
    q = rng.standard_normal(dim)
    params = {"budget": budget}
    if plan is not None:
        params["force_plan"] = "flat" if plan == "flat" else "index"
    ids, d, ex = execute_topk(src, "v", q, k, allow_expr, params)
    allow = allow_expr & src.live_rowmask()
    m = int(allow.sum())
    assert len(ids) == min(k, m)                               # completeness
    assert len(set(ids.tolist())) == len(ids)                  # no row twice
    assert allow[ids].all()                                    # the filter holds, no deleted row
    np.testing.assert_allclose(d, exact_distances(X[ids], q, metric), rtol=1e-6, atol=1e-6)
    assert np.all(np.diff(d) >= 0)
    if plan in ("flat", "index-flat") or budget == 1:          # exact paths: exact answers
        _, want_d = brute(X, q, allow, k, metric)
        np.testing.assert_allclose(d, want_d, rtol=1e-6, atol=1e-6)
    assert ex.rows_matched == m and ex.rows_returned == len(ids)
    assert ex.to_dict()["plan"] == ex.plan and str(ex)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), dim=st.integers(1, 8), sel=st.floats(0, 1),
       seed=st.integers(0, 10_000), r=st.floats(0, 4),
       lo=st.one_of(st.none(), st.floats(0, 2)),
       plan=st.sampled_from(["flat", "index-flat", "index-ivf"]))
def test_range_properties(n, dim, sel, seed, r, lo, plan):
    assume(lo is None or lo <= r)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    src = ArraySource({"v": X})
    if plan == "index-flat":
        src.set_vector_index("v", FlatIndex(src, "v", batch_size=int(rng.integers(1, 20))))
    elif plan == "index-ivf":
        src.set_vector_index("v", ToyIVF(src, "v", nlist=max(1, n // 20), seed=seed))
    allow = rng.random(n) < sel
    q = rng.standard_normal(dim)
    params = {"force_plan": "flat" if plan == "flat" else "index"}
    ids, d, ex = execute_range(src, "v", q, max_distance=r, min_distance=lo, expr=allow,
                               params=params)
    assert len(set(ids.tolist())) == len(ids)
    assert allow[ids].all()
    true_d = exact_distances(X, q, "l2")
    eps = 1e-9
    assert np.all(true_d[ids] <= r + eps) and (lo is None or np.all(true_d[ids] >= lo - eps))
    if plan != "index-ivf":                                  # exact paths return all of them
        want = np.flatnonzero(allow & (true_d <= r - 1e-6) & ((true_d >= lo + 1e-6) if lo is not None else True))
        assert set(want.tolist()) <= set(ids.tolist())


def clustered(n=6000, dim=16, clusters=30, seed=1):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((clusters, dim)) * 3
    labels = rng.integers(0, clusters, n)
    X = (means[labels] + rng.standard_normal((n, dim))).astype(np.float32)
    qlab = rng.integers(0, clusters, 40)
    Q = means[qlab] + rng.standard_normal((40, dim))
    return X, labels, Q, qlab, means


def make_index(src, which):
    if which == "toy-ivf":
        return ToyIVF(src, "v", nlist=80)
    partition = pytest.importorskip("unidb.index.partition",
                                    reason="the partition index is not built yet")
    ids, X = src.flat_rows("v")
    return partition.PartitionIndex.build(ids, X, "l2")


@pytest.mark.parametrize("index", ["toy-ivf", "partition"])
@pytest.mark.parametrize("kind", ["correlated", "anti-correlated", "uniform"])
def test_filtered_recall_on_clustered_data(kind, index):
    X, labels, Q, qlab, means = clustered()
    attr = np.random.default_rng(2).integers(0, 100, len(X))
    src = ArraySource({"v": X}, scalars=pa.table({"label": labels, "attr": attr}))
    src.set_vector_index("v", make_index(src, index))
    found, truth, under = [], [], 0
    for q, ql in zip(Q, qlab):
        if kind == "correlated":
            allow = labels == ql
        elif kind == "anti-correlated":                      # the cluster farthest from the query
            far = np.argmax(((means - q) ** 2).sum(1))
            allow = labels == far
        else:
            allow = attr < 10                                # 10%: below it the planner goes exact
        ids, d, ex = execute_topk(src, "v", q, 10, allow, {"force_plan": "index"})
        assert ex.plan == "index-stream"
        under += len(ids) < min(10, allow.sum())
        found.append(ids)
        truth.append(brute(X, q, allow, 10)[0])
    assert under == 0
    assert recall_at_k(found, truth, 10) >= 0.95


def test_planner_choices_and_explain():
    # 128-d, 40k rows: the exact plan covers up to EXACT_MAX_CELLS / 128 = 16,384 matches
    X, labels, Q, qlab, _ = clustered(n=40_000, dim=128)
    price = np.random.default_rng(3).random(len(X)) * 1000
    src = ArraySource({"v": X}, scalars=pa.table({"label": labels, "price": price}))
    from unidb.query.filter import col
    q = Q[0]
    _, _, ex = execute_topk(src, "v", q, 10, col("price") < 500)
    assert ex.plan == "exact-filtered" and "no vector index" in ex.reason
    src.set_vector_index("v", ToyIVF(src, "v", nlist=100))
    _, _, ex = execute_topk(src, "v", q, 10, col("price") < 500)
    assert ex.plan == "index-stream" and ex.monotone_step is not None and ex.rows_matched > 0
    ids, _, ex = execute_topk(src, "v", q, 10, col("price") < 5)
    assert ex.plan == "exact-filtered"
    src.build_scalar_index("price")
    ids2, _, ex = execute_topk(src, "v", q, 10, (col("price") < 5) & (col("label") >= 0))
    assert ex.plan == "scalar-driven" and ids2.tolist() == ids.tolist()
    d = ex.to_dict()
    for key in ("plan", "rows_matched", "candidates_visited", "distances_computed",
                "monotone_step", "effective_k_prime", "stage_ms"):
        assert key in d
    with pytest.raises(ValidationError, match="force_plan"):
        execute_topk(src, "v", q, 10, None, {"force_plan": "bogus"})


def test_budget_exhaustion_finishes_exactly():
    X, labels, Q, _, _ = clustered(n=5000)
    src = ArraySource({"v": X})
    src.set_vector_index("v", ToyIVF(src, "v", nlist=50))
    allow = np.random.default_rng(0).random(len(X)) < 0.3
    ids, d, ex = execute_topk(src, "v", Q[0], 50, allow, {"force_plan": "index", "budget": 10})
    assert ex.budget_exhausted and ex.exact_finish_rows > 0
    assert ids.tolist() == brute(X, Q[0], allow, 50)[0].tolist()


def test_string_filter_uses_the_filter_language():
    X, labels, Q, qlab, _ = clustered(n=2000)
    src = ArraySource({"v": X}, scalars=pa.table({"label": labels}))
    ids, _, ex = execute_topk(src, "v", Q[0], 5, f"label = {int(qlab[0])}")
    assert (labels[ids] == qlab[0]).all() and len(ids) == 5


def test_range_argument_errors():
    src = ArraySource({"v": np.zeros((3, 2), np.float32)})
    with pytest.raises(ValidationError, match="min_distance 2"):
        execute_range(src, "v", np.zeros(2), max_distance=1.0, min_distance=2.0)
    with pytest.raises(ValidationError, match="needs"):
        execute_range(src, "v", np.zeros(2))
