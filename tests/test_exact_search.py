"""Exact (flat) search equals numpy brute force: ids and distances, l2/cosine/ip, with filters,
ranges and batches, on SIFT-small and MNIST (and on generated data when they are absent)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import unidb
from unidb import col
from unidb.datasets import load_mnist, load_siftsmall

from conftest import data_dir

K = 10
FILTERS = [
    "a < 30",
    "a >= 50 AND cat = 'x'",
    "cat IN ('x', 'y')",
    "price BETWEEN 10 AND 20",
    "price IS NULL",
    "price IS NOT NULL AND flag",
    "NOT (a < 90)",
    "cat LIKE 'x%'",
    "a = 7 OR a = 8",
    "flag = FALSE AND (a < 10 OR a > 90)",
    "cat != 'z' AND price > 40",
    (col("a") < 5) & col("cat").isin(["y", "z"]),
    "a = 3 AND price < 3",                       # a handful of rows: fewer than k exist
]


def attributes(n: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    price = rng.uniform(0, 50, n).round(2).astype(object)
    price[rng.random(n) < 0.15] = None
    return {"a": rng.integers(0, 100, n), "cat": rng.choice(["x", "xy", "y", "z"], n).tolist(),
            "price": list(price), "flag": (rng.random(n) < 0.5).tolist()}


def reference_mask(attrs: dict, f) -> np.ndarray:
    """Evaluate a filter independently with numpy/pandas (SQL NULL semantics)."""
    import pandas as pd
    df = pd.DataFrame(attrs)
    price = pd.to_numeric(df["price"])
    a, cat, flag = df["a"].to_numpy(), df["cat"].to_numpy(), df["flag"].to_numpy(bool)
    pn = price.notna().to_numpy()
    p = price.to_numpy(float)
    table = {
        FILTERS[0]: a < 30, FILTERS[1]: (a >= 50) & (cat == "x"),
        FILTERS[2]: np.isin(cat, ["x", "y"]), FILTERS[3]: pn & (p >= 10) & (p <= 20),
        FILTERS[4]: ~pn, FILTERS[5]: pn & flag, FILTERS[6]: ~(a < 90),
        FILTERS[7]: np.char.startswith(cat.astype(str), "x"), FILTERS[8]: (a == 7) | (a == 8),
        FILTERS[9]: ~flag & ((a < 10) | (a > 90)), FILTERS[10]: (cat != "z") & pn & (p > 40),
        FILTERS[12]: (a == 3) & pn & (p < 3),
    }
    if isinstance(f, str):
        return table[f]
    return (a < 5) & np.isin(cat, ["y", "z"])


def brute_force(base: np.ndarray, q: np.ndarray, metric: str, k: int, mask=None):
    x = base.astype(np.float64)
    qq = q.astype(np.float64)
    if metric == "l2":
        d = np.sqrt(((x - qq) ** 2).sum(1))
    elif metric == "cosine":
        d = 1 - (x @ qq) / (np.linalg.norm(x, axis=1) * np.linalg.norm(qq))
    else:
        d = -(x @ qq)
    ids = np.arange(len(x))
    if mask is not None:
        ids, d = ids[mask], d[mask]
    order = np.lexsort((ids, d))[:k]
    return ids[order], d[order]


def load_table(db, name, base, metric, attrs=None):
    schema = {"id": unidb.Int64(primary_key=True), "v": unidb.Vector(base.shape[1], metric=metric)}
    data = {"id": np.arange(len(base)), "v": base}
    if attrs is not None:
        schema.update({"a": unidb.Int64(), "cat": unidb.String(),
                       "price": unidb.Float64(nullable=True), "flag": unidb.Bool()})
        data.update(attrs)
    t = db.create_table(name, schema)
    for s in range(0, len(base), 2500):             # several batches -> several parts
        t.add({k: v[s:s + 2500] for k, v in data.items()})
    return t


def assert_same(got_ids, got_d, want_ids, want_d, metric):
    np.testing.assert_allclose(got_d, want_d, rtol=1e-9, atol=1e-9)
    # Same ids; rows at exactly equal distance are ordered by id on both sides.
    assert list(got_ids) == list(want_ids)


@pytest.fixture(scope="module")
def sift():
    data_dir("siftsmall")
    return load_siftsmall()


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_sift_unfiltered_and_filtered(tmp_path, sift, metric):
    base, queries = sift.base, sift.queries[:25]
    keep = np.flatnonzero(np.any(base != 0, axis=1))
    assert len(keep) == len(base)                    # SIFT has no zero rows
    attrs = attributes(len(base))
    db = unidb.connect(tmp_path / "db")
    t = load_table(db, "sift", base, metric, attrs)
    t.flush()
    t.add({"id": [10**6], "v": [np.full(128, 3.0, np.float32)], "a": [1], "cat": ["q"],
           "price": [None], "flag": [False]})        # an in-memory part next to segments
    t.delete(ids=[10**6])
    for f in [None] + FILTERS:
        mask = None if f is None else reference_mask(attrs, f)
        b = t.search(queries).limit(K).select(["id"])
        if f is not None:
            b = b.where(f)
        res = b.to_list()
        for qi, rows in enumerate(res):
            want_ids, want_d = brute_force(base, queries[qi], metric, K, mask)
            got_ids = [r["id"] for r in rows]
            key = "_score" if metric == "ip" else "_distance"
            got_d = [(-r[key] if metric == "ip" else r[key]) for r in rows]
            assert_same(got_ids, got_d, want_ids, want_d, metric)
            if mask is not None:
                assert len(rows) == min(K, int(mask.sum()))
    if metric == "l2":                               # against the official ground truth too
        res = t.search(sift.queries).limit(K).select(["id"]).to_list()
        for qi, rows in enumerate(res):
            gt = sift.gt[qi][:K]
            got = [r["id"] for r in rows]
            d_gt = np.sqrt(((base[gt] - sift.queries[qi]) ** 2).sum(1))
            np.testing.assert_allclose([r["_distance"] for r in rows], d_gt, rtol=1e-6)
            assert len(set(got) & set(gt.tolist())) >= K - 1 or np.allclose(
                sorted(d_gt), [r["_distance"] for r in rows])
    db.close()


def test_sift_distance_range_and_batches(tmp_path, sift):
    base, queries = sift.base, sift.queries[:10]
    db = unidb.connect(tmp_path / "db")
    t = load_table(db, "sift", base, "l2", attributes(len(base)))
    for qi, q in enumerate(queries):
        d = np.sqrt(((base.astype(np.float64) - q) ** 2).sum(1))
        r = float(np.sort(d)[50])                    # ~51 rows within r
        rows = t.search(q).distance_range(max=r).select(["id"]).to_list()
        assert sorted(x["id"] for x in rows) == sorted(np.flatnonzero(d <= r).tolist())
        assert all(x["_distance"] <= r for x in rows)
        lo = float(np.sort(d)[10])
        rows = t.search(q).distance_range(min=lo, max=r).where("a < 50").to_list()
        want = np.flatnonzero((d >= lo) & (d <= r) & (attributes(len(base))["a"] < 50))
        assert sorted(x["id"] for x in rows) == sorted(want.tolist())
        assert t.search(q).distance_range(max=float(np.sort(d)[0]) - 1e-3).to_list() == []
    batch = t.search(queries).limit(5).to_arrow()
    assert batch.num_rows == 50 and set(batch.column("_query").to_pylist()) == set(range(10))
    singles = [t.search(q).limit(5).to_list() for q in queries]
    assert t.search(queries).limit(5).to_list() == singles
    db.close()


def test_mnist_against_ground_truth(tmp_path):
    data_dir("mnist10k")
    ds = load_mnist()
    db = unidb.connect(tmp_path / "db")
    t = load_table(db, "mnist", ds.base, "l2")
    t._db  # noqa: B018
    lab = db.create_table("lab", {"id": unidb.Int64(primary_key=True), "label": unidb.Int64(),
                                  "v": unidb.Vector(784)})
    lab.add({"id": np.arange(len(ds.base)), "label": ds.base_labels, "v": ds.base})
    q = ds.queries[:40]
    res = t.search(q).limit(K).select(["id"]).to_list()
    for qi, rows in enumerate(res):
        np.testing.assert_allclose([r["_distance"] for r in rows], ds.gt_dists[qi][:K], rtol=1e-5)
        assert [r["id"] for r in rows] == ds.gt[qi][:K].tolist()
    for qi in range(40):
        rows = lab.search(q[qi]).where(f"label = {int(ds.query_labels[qi])}").limit(K).to_list()
        assert [r["id"] for r in rows] == ds.gt_same_label[qi][:K].tolist()
        assert all(r["label"] == ds.query_labels[qi] for r in rows)
    db.close()


def test_near_ties_are_ordered_exactly(db):
    # Rows differ from the query by amounts far below float32 resolution of |x|^2 (~1e6 here),
    # so the fast expansion cannot order them; the exact re-check must.
    rng = np.random.default_rng(3)
    q = np.full(16, 500.0, dtype=np.float32)
    base = np.repeat(q[None, :], 200, axis=0)
    offsets = rng.permutation(200).astype(np.float32) * 0.0625
    base[:, 0] += offsets
    t = db.create_table("ties", {"id": unidb.Int64(primary_key=True), "v": unidb.Vector(16)})
    t.add({"id": np.arange(200), "v": base})
    rows = t.search(q).limit(20).to_list()
    want = np.argsort(offsets)[:20]
    assert [r["id"] for r in rows] == want.tolist()
    np.testing.assert_allclose([r["_distance"] for r in rows], np.sort(offsets)[:20], atol=1e-12)
    # Exact duplicates tie at distance 0 and come back ordered by row id.
    t.add({"id": [1000, 1001], "v": [q, q]})
    rows = t.search(q).limit(3).to_list()
    assert [r["_distance"] for r in rows] == [0.0, 0.0, 0.0]


def test_results_carry_key_and_selected_columns_and_respect_deletes(db):
    rng = np.random.default_rng(0)
    t = db.create_table("s", {"key": unidb.String(primary_key=True), "n": unidb.Int64(),
                              "v": unidb.Vector(4, metric="cosine")})
    v = rng.standard_normal((100, 4)).astype(np.float32)
    t.add({"key": [f"k{i}" for i in range(100)], "n": np.arange(100), "v": v})
    rows = t.search(v[5]).select(["n"]).limit(3).to_list()
    assert set(rows[0]) == {"key", "n", "_distance"} and rows[0]["key"] == "k5"
    assert abs(rows[0]["_distance"]) < 1e-6
    t.delete(ids=["k5"])
    assert all(r["key"] != "k5" for r in t.search(v[5]).limit(100).to_list())
    t.upsert({"key": ["k6"], "n": [-1], "v": [v[5]]})
    assert t.search(v[5]).limit(1).to_list()[0]["n"] == -1
    assert pa.types.is_float64(t.search(v[5]).to_arrow().schema.field("_distance").type)


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_mnist_cosine_ip_with_filters(tmp_path, metric):
    data_dir("mnist10k")
    ds = load_mnist()
    base = ds.base
    attrs = attributes(len(base), seed=11)
    db = unidb.connect(tmp_path / "db")
    t = load_table(db, "mnist", base, metric, attrs)
    queries = ds.queries[:8]
    for f in [None] + FILTERS:
        mask = None if f is None else reference_mask(attrs, f)
        b = t.search(queries).limit(K).select(["id"])
        if f is not None:
            b = b.where(f)
        for qi, rows in enumerate(b.to_list()):
            want_ids, want_d = brute_force(base, queries[qi], metric, K, mask)
            key = "_score" if metric == "ip" else "_distance"
            got_d = [(-r[key] if metric == "ip" else r[key]) for r in rows]
            np.testing.assert_allclose(got_d, want_d, rtol=1e-9, atol=1e-6)
            assert [r["id"] for r in rows] == list(want_ids)
    db.close()
