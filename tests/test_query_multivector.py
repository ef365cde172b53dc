"""Multi-vector weighted top-k (threshold algorithm) equals brute-force weighted sums."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from unidb.errors import ValidationError
from unidb.index.flat.scan import exact_distances
from unidb.query.array_source import ArraySource
from unidb.query.planner import execute_multivector


def brute(src, X, Y, qa, qb, wa, wb, allow, k, ma, mb):
    s = wa * exact_distances(X, qa, ma) + wb * exact_distances(Y, qb, mb)
    ids = np.flatnonzero(allow)
    o = np.lexsort((ids, s[ids]))[:k]
    return ids[o], s[ids][o]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 400), k=st.integers(0, 30), seed=st.integers(0, 10_000),
       wa=st.sampled_from([0.0, 1.0, 0.1, 3.0]), wb=st.sampled_from([1.0, 10.0, 0.5]),
       sel=st.floats(0.05, 1), schedule=st.sampled_from(["auto", "adaptive", "round-robin"]),
       metrics=st.sampled_from([("l2", "l2"), ("l2", "cosine"), ("ip", "l2")]),
       budget=st.sampled_from([None, 50]))
def test_threshold_algorithm_equals_brute_force(n, k, seed, wa, wb, sel, schedule, metrics,
                                                 budget):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    Y = rng.standard_normal((n, 3)).astype(np.float32)
    src = ArraySource({"a": X, "b": Y}, {"a": metrics[0], "b": metrics[1]})
    qa, qb = rng.standard_normal(6), rng.standard_normal(3)
    allow = rng.random(n) < sel
    ids, d, ex = execute_multivector(src, {"a": qa, "b": qb}, {"a": wa, "b": wb}, k, allow,
                                     {"schedule": schedule, "budget": budget})
    want_ids, want_d = brute(src, X, Y, qa, qb, wa, wb, allow, k, *metrics)
    assert len(ids) == min(k, allow.sum()) and len(set(ids.tolist())) == len(ids)
    assert allow[ids].all()
    np.testing.assert_allclose(d, want_d, rtol=1e-6, atol=1e-6)


def test_adaptive_pulls_fewer_candidates_with_skewed_weights():
    rng = np.random.default_rng(0)
    n = 20_000
    X = rng.standard_normal((n, 16)).astype(np.float32)
    Y = rng.standard_normal((n, 16)).astype(np.float32)
    src = ArraySource({"a": X, "b": Y})
    pulled = {"adaptive": 0, "round-robin": 0}
    for i in range(5):
        qa, qb = rng.standard_normal(16), rng.standard_normal(16)
        res = {}
        for s in pulled:
            ids, d, ex = execute_multivector(src, {"a": qa, "b": qb}, {"a": 1.0, "b": 10.0}, 10,
                                             params={"schedule": s, "batch_size": 8})
            pulled[s] += ex.candidates_visited
            res[s] = ids.tolist()
        assert res["adaptive"] == res["round-robin"]
    assert pulled["adaptive"] < pulled["round-robin"]


def test_multivector_errors():
    src = ArraySource({"a": np.zeros((3, 2), np.float32)})
    with pytest.raises(ValidationError, match="at least one"):
        execute_multivector(src, {}, {}, 5)
    with pytest.raises(ValidationError, match="schedule"):
        execute_multivector(src, {"a": np.zeros(2)}, None, 5, params={"schedule": "x"})
    with pytest.raises(ValidationError, match="weights"):
        execute_multivector(src, {"a": np.zeros(2)}, {"a": -1.0}, 5)
