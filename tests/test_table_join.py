"""unidb.similarity_join over real tables equals a nested loop; keys, filters, top-k form."""
from __future__ import annotations

import numpy as np
import pytest

import unidb
from unidb.errors import QueryError


def make(db, name, n, seed, index=False):
    rng = np.random.default_rng(seed)
    t = db.create_table(name, {"key": unidb.String(primary_key=True), "grp": unidb.Int64(),
                               "img": unidb.Vector(8)})
    v = rng.standard_normal((n, 8)).astype(np.float32)
    t.add({"key": [f"{name}{i}" for i in range(n)], "grp": np.arange(n) % 3, "img": v})
    if index:
        t.create_index("img", kind="partition")
    return t, v


@pytest.mark.parametrize("index", [False, True])
def test_range_and_topk_join_equal_nested_loop(db, index):
    left, lv = make(db, "a", 300, 1)
    right, rv = make(db, "b", 2000, 2, index=index)
    d = np.sqrt(((lv[:, None, :].astype(np.float64) - rv[None, :, :]) ** 2).sum(-1))
    r = float(np.quantile(d, 0.002))
    got = unidb.similarity_join(left, right, on=("img", "img"), max_distance=r).to_arrow()
    want = {(f"a{i}", f"b{j}") for i, j in zip(*np.nonzero(d <= r))}
    pairs = set(zip(got.column("key").to_pylist() if "key" in got.column_names else
                    got.column("left_key").to_pylist(), got.column("right_key").to_pylist()))
    if index:
        assert len(pairs & want) >= 0.99 * len(want) and pairs <= want
    else:
        assert pairs == want
    assert all(x <= r for x in got.column("_distance").to_pylist())
    top = unidb.similarity_join(left, right, on=("img", "img"), k=3,
                                where_right="grp = 1").to_arrow()
    assert top.num_rows == 3 * 300
    keep = np.arange(2000) % 3 == 1
    for i in range(0, 300, 37):
        rows = [rk for lk, rk in zip(top.column("left_key").to_pylist(),
                                     top.column("right_key").to_pylist()) if lk == f"a{i}"]
        best = np.flatnonzero(keep)[np.argsort(d[i, keep])[:3]]
        assert set(rows) == {f"b{j}" for j in best} or index


def test_join_errors(db):
    left, _ = make(db, "a", 10, 1)
    with pytest.raises(QueryError, match="exactly one"):
        unidb.similarity_join(left, left, on=("img", "img"))
    with pytest.raises(QueryError, match="pair"):
        unidb.similarity_join(left, left, on="img", k=2)
    assert unidb.similarity_join(left, left, on=("img", "img"), max_distance=0.0).to_arrow().num_rows == 10
