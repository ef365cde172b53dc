"""Access paths behind the scan protocol: the exact flat scan and the sorted scalar index."""
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from unidb.index.flat.scan import FlatScan, exact_distances
from unidb.index.iterator import ScanIterator, iterate
from unidb.index.scalar.sorted_index import SortedIndex


def drain(scan):
    ids, ds = [], []
    for b in iterate(scan):
        ids.append(b.row_ids)
        ds.append(b.distances)
    return (np.concatenate(ids) if ids else np.empty(0, np.int64),
            np.concatenate(ds) if ds else np.empty(0))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 400), dim=st.integers(1, 12), seed=st.integers(0, 10_000),
       metric=st.sampled_from(["l2", "cosine", "ip"]), batch=st.integers(1, 50),
       masked=st.booleans())
def test_flat_scan_yields_every_masked_row_once_in_order(n, dim, seed, metric, batch, masked):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 3 + 1          # row ids need not be positions
    mask = rng.random(3 * n + 2) < 0.5 if masked else None
    q = rng.standard_normal(dim)
    scan = FlatScan(ids, X, metric, q, row_mask=mask, batch_size=batch)
    assert isinstance(scan, ScanIterator)
    got_ids, got_d = drain(scan)
    want = ids if mask is None else ids[mask[ids]]
    assert sorted(got_ids.tolist()) == sorted(want.tolist())          # each row exactly once
    ref = exact_distances(X[np.searchsorted(ids, got_ids)], q, metric)
    np.testing.assert_allclose(got_d, ref, rtol=1e-6, atol=1e-6)
    assert np.all(np.diff(got_d) >= -1e-5 * (1 + np.abs(got_d[1:])))  # nearest first


def test_flat_scan_distances_are_true_metric_values():
    X = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    q = np.array([0.0, 0.0])
    _, d = drain(FlatScan(np.arange(2), X, "l2", q))
    assert d.tolist() == pytest.approx([1.0, 5.0])                    # Euclidean, not squared
    q = np.array([1.0, 0.0])
    ids, d = drain(FlatScan(np.arange(2), X, "cosine", q))
    assert d.tolist() == pytest.approx([0.0, 0.4])                    # 1 - cos
    ids, d = drain(FlatScan(np.arange(2), X, "ip", q))
    assert d.tolist() == pytest.approx([-3.0, -1.0]) and ids.tolist() == [0, 1]


def test_flat_scan_rejects_bad_queries():
    X = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="dimension"):
        FlatScan(np.arange(3), X, "l2", np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        FlatScan(np.arange(3), X, "l2", np.array([0, 0, np.nan, 0]))


keys = st.lists(st.one_of(st.none(), st.integers(-20, 20)), max_size=80)


@settings(max_examples=100, deadline=None)
@given(values=keys, lo=st.one_of(st.none(), st.integers(-25, 25)),
       hi=st.one_of(st.none(), st.integers(-25, 25)), lo_incl=st.booleans(), hi_incl=st.booleans())
def test_sorted_index_range_scan_and_count(values, lo, hi, lo_incl, hi_incl):
    idx = SortedIndex.build(np.arange(len(values)) + 100, pa.array(values, pa.int64()))
    want = [i + 100 for i, v in enumerate(values) if v is not None
            and (lo is None or (v >= lo if lo_incl else v > lo))
            and (hi is None or (v <= hi if hi_incl else v < hi))]
    ids, d = drain(idx.range_scan(lo, hi, lo_incl, hi_incl, batch_size=7))
    assert sorted(ids.tolist()) == sorted(want)
    assert np.all(np.diff(d) >= 0)                                    # key order
    assert idx.count_range(lo, hi, lo_incl, hi_incl) == len(want)


def test_sorted_index_add_delete_save_load(tmp_path):
    idx = SortedIndex.build([1, 2, 3], [5.0, None, 1.0])
    assert len(idx) == 2                                              # the null is not indexed
    idx.add([7, 8], np.array([3.0, np.nan]))
    assert idx.delete([1, 2, 99]) == 1                                # only row 1 was indexed
    assert idx.range_rows().tolist() == [3, 7]
    idx.save(tmp_path / "price", covered=9)
    back, covered = SortedIndex.load(tmp_path / "price")
    assert covered == 9
    assert back.range_rows(2, None).tolist() == [7]
    assert back.count_range(None, 1.0, True, False) == 0
