"""Similarity join equals the nested-loop join; it streams batches."""
import types

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from unidb.errors import ValidationError
from unidb.query.array_source import ArraySource
from unidb.query.join import nested_loop_join
from unidb.query.planner import similarity_join
from test_query_operators import FlatIndex


def as_dict(batches):
    out = {}
    for l, r, d in batches:
        assert len(l) == len(r) == len(d)
        for a, b, x in zip(l.tolist(), r.tolist(), d.tolist()):
            assert (a, b) not in out                                  # no pair twice
            out[(a, b)] = x
    return out


@settings(max_examples=40, deadline=None)
@given(nl=st.integers(0, 60), nr=st.integers(0, 80), seed=st.integers(0, 10_000),
       mode=st.sampled_from(["range", "topk"]), r=st.floats(0.5, 3), k=st.integers(1, 6),
       metric=st.sampled_from(["l2", "cosine", "ip"]), indexed=st.booleans(),
       sel=st.floats(0.2, 1))
def test_join_equals_nested_loop(nl, nr, seed, mode, r, k, metric, indexed, sel):
    rng = np.random.default_rng(seed)
    L = ArraySource({"v": rng.standard_normal((nl, 4)).astype(np.float32)}, {"v": metric})
    R = ArraySource({"w": rng.standard_normal((nr, 4)).astype(np.float32)}, {"w": metric})
    if indexed and nr:
        R.set_vector_index("w", FlatIndex(R, "w", batch_size=7))
    fl, fr = rng.random(nl) < sel, rng.random(nr) < sel
    kw = {"max_distance": r} if mode == "range" else {"k": k}
    params = {"force_plan": "index"} if indexed and nr else None
    got = as_dict(similarity_join(L, R, ("v", "w"), expr_left=fl, expr_right=fr,
                                  params=params, **kw))
    want = as_dict([nested_loop_join(L, R, ("v", "w"), expr_left=fl, expr_right=fr, **kw)])
    if mode == "range":
        assert got.keys() == want.keys()
    # (top-k: ties at the k-th distance may pick different rows, so compare distances per row)
    per = lambda m: sorted((a, round(x, 5)) for (a, _), x in m.items())
    assert per(got) == per(want)


def test_join_is_a_lazy_generator_of_batches():
    rng = np.random.default_rng(0)
    L = ArraySource({"v": rng.standard_normal((3000, 8)).astype(np.float32)})
    R = ArraySource({"v": rng.standard_normal((3000, 8)).astype(np.float32)})
    it = similarity_join(L, R, ("v", "v"), k=2, params={"join_block_cells": None})
    assert isinstance(it, types.GeneratorType)
    first = next(it)
    assert len(first[0]) < 3000 * 3000
    with pytest.raises(ValidationError, match="exactly one"):
        next(similarity_join(L, R, ("v", "v")))
