"""Filtered top-k on real data: MNIST with the same-label filter, against the exact ground truth
in ../shared/data/mnist10k, through the partition index (skipped when either is absent)."""
import numpy as np
import pyarrow as pa
import pytest

from conftest import data_dir
from unidb.evaluate import recall_at_k
from unidb.query.array_source import ArraySource
from unidb.query.filter import col
from unidb.query.planner import execute_range, execute_topk

NQ = 200


@pytest.fixture(scope="module")
def mnist():
    data_dir("mnist10k")
    from unidb import datasets
    return datasets.load_mnist()


@pytest.fixture(scope="module")
def source(mnist):
    partition = pytest.importorskip("unidb.index.partition",
                                    reason="the partition index is not built yet")
    src = ArraySource({"v": mnist.base}, scalars=pa.table({"label": mnist.base_labels}))
    src.set_vector_index("v", partition.PartitionIndex.build(np.arange(len(mnist.base)),
                                                              mnist.base, "l2"))
    return src


@pytest.mark.parametrize("force", [None, "index"])
def test_same_label_filter_recall_and_no_underfill(mnist, source, force):
    found, plans = [], set()
    for q, lab in zip(mnist.queries[:NQ], mnist.query_labels[:NQ]):
        ids, d, ex = execute_topk(source, "v", q, 10, col("label") == int(lab),
                                  {"force_plan": force})
        assert len(ids) == 10                                   # never under-filled
        assert (mnist.base_labels[ids] == lab).all()            # the filter holds
        found.append(ids)
        plans.add(ex.plan)
    assert recall_at_k(found, mnist.gt_same_label[:NQ], 10) >= 0.95
    if force == "index":
        assert plans == {"index-stream"}


def test_unfiltered_and_label_set_filters(mnist, source):
    found = []
    for q in mnist.queries[:NQ]:
        ids, _, ex = execute_topk(source, "v", q, 10, None)
        assert ex.plan == "index-postfilter"                    # the search fast path
        found.append(ids)
    assert recall_at_k(found, mnist.gt[:NQ], 10) >= 0.95
    # a filter that excludes the query's own label (anti-correlated with its neighbourhood):
    # the fast path finds too few survivors and falls through to the guarded stream
    for force in (None, "index"):
        found, truth, plans = [], [], set()
        for q, lab in zip(mnist.queries[:50], mnist.query_labels[:50]):
            expr = col("label") != int(lab)
            ids, _, ex = execute_topk(source, "v", q, 10, expr, {"force_plan": force})
            rows = np.flatnonzero(mnist.base_labels != lab)
            d = np.linalg.norm(mnist.base[rows] - q, axis=1)
            truth.append(rows[np.argsort(d)[:10]])
            found.append(ids)
            plans.add(ex.plan)
        assert recall_at_k(found, truth, 10) >= 0.95
        if force == "index":
            assert plans == {"index-stream"}


def test_range_through_the_index_is_precise(mnist, source):
    q = mnist.queries[0]
    r = float(mnist.gt_dists[0, 49])                            # the 50th neighbour's distance
    ids, d, ex = execute_range(source, "v", q, max_distance=r, params={"force_plan": "index"})
    true_d = np.linalg.norm(mnist.base - q, axis=1)
    want = set(np.flatnonzero(true_d <= r).tolist())
    got = set(ids.tolist())
    assert got <= want | set(np.flatnonzero(true_d <= r + 1e-3).tolist())    # precision 1
    assert len(got & want) >= 0.95 * len(want)
