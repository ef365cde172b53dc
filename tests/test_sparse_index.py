"""SparseIndex: exact dot-product top-k (positive and negative weights) against brute force."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from unidb.errors import ValidationError
from unidb.index.sparse import SparseIndex

DIM = 50


def random_vectors(rng: np.random.Generator, n: int, negative: bool):
    out = []
    for _ in range(n):
        nnz = int(rng.integers(0, 8))
        idx = np.sort(rng.choice(DIM, nnz, replace=False)).astype(np.int32)
        val = rng.random(nnz).astype(np.float32) + 0.01
        if negative:
            val *= np.where(rng.random(nnz) < 0.3, -1, 1).astype(np.float32)
        out.append((idx, val))
    return out


def brute(vectors: dict, qi, qv, allow=None):
    """(rows, scores) of every row sharing a term with the query, best first (float64)."""
    q = dict(zip(qi.tolist(), qv.astype(np.float64).tolist()))
    q = {t: w for t, w in q.items() if w != 0}
    res = []
    for r, (i, v) in vectors.items():
        common = [j for j, t in enumerate(i.tolist()) if t in q]
        if common and (allow is None or allow(np.array([r]))[0]):
            res.append((r, sum(q[i[j]] * float(v[j]) for j in common)))
    res.sort(key=lambda x: (-x[1], x[0]))
    return [r for r, _ in res], [s for _, s in res]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), negative=st.booleans(), k=st.integers(1, 30),
       maxscore=st.booleans())
def test_topk_equals_brute_force(seed, negative, k, maxscore):
    rng = np.random.default_rng(seed)
    idx = SparseIndex()
    idx.tune(topk="maxscore" if maxscore else "exhaustive", buffer_docs=32)
    vectors = {}
    for lo in (0, 100, 120):
        vs = random_vectors(rng, 100 if lo == 0 else 20, negative)
        rows = np.arange(lo, lo + len(vs))
        idx.add(rows, vs)
        vectors.update({r: v for r, v in zip(rows.tolist(), vs) if len(v[0])})
    gone = rng.choice(140, 15, replace=False)
    idx.delete(gone)
    for g in gone.tolist():
        vectors.pop(g, None)
    for _ in range(5):
        qi = np.sort(rng.choice(DIM, int(rng.integers(1, 10)), replace=False)).astype(np.int32)
        qv = (rng.random(len(qi)) - (0.4 if negative else 0)).astype(np.float32)
        br, bs = brute(vectors, qi, qv)
        rows, scores = idx.search(qi, qv, k)
        er, es = idx.search(qi, qv, k, exhaustive=True)
        assert rows.tolist() == er.tolist() and scores.tolist() == es.tolist()
        np.testing.assert_allclose(scores, bs[:k], rtol=1e-6, atol=1e-6)
        # ranks agree except where brute-force scores tie within rounding
        assert len(rows) == min(k, len(br))
        ar, a_s = idx.score_all(qi, qv)
        np.testing.assert_allclose(a_s, bs, rtol=1e-6, atol=1e-6)
        assert set(ar.tolist()) == set(br)
        if len(br):
            assert idx.upper_bound(qi, qv) >= max(bs) - 1e-6
        allow = lambda r: r % 3 != 0
        fr, fs = idx.search(qi, qv, k, allow=allow)
        np.testing.assert_allclose(fs, brute(vectors, qi, qv, allow)[1][:k], rtol=1e-6,
                                   atol=1e-6)


def test_scores_for_and_persistence(tmp_path):
    idx = SparseIndex()
    idx.add(np.array([5, 6, 7]), [(np.array([1, 4], np.int32), np.array([0.5, 2.0], np.float32)),
                                  (np.array([4], np.int32), np.array([-1.0], np.float32)),
                                  None])
    qi, qv = np.array([4], np.int32), np.array([2.0], np.float32)
    s = idx.scores_for(qi, qv, np.array([5, 6, 7, 8]))
    assert s[0] == 4.0 and s[1] == -2.0 and np.isnan(s[2]) and np.isnan(s[3])
    assert idx.search(qi, qv, 5)[0].tolist() == [5, 6]   # matching rows, even when negative
    idx.save(tmp_path, covered=3)
    back, covered = SparseIndex.load(tmp_path)
    assert covered == 3 and back.search(qi, qv, 5)[0].tolist() == [5, 6]
    with pytest.raises(ValidationError, match="strictly increasing"):
        idx.add(np.array([9]), [(np.array([3, 1], np.int32), np.array([1, 1], np.float32))])
    with pytest.raises(ValidationError, match="finite"):
        idx.search(np.array([1], np.int32), np.array([np.nan], np.float32), 3)


def test_large_term_ids_and_stats():
    idx = SparseIndex()
    big = np.array([5, 2**31 - 1], np.int32)
    idx.add(np.array([1, 2]), [(big, np.array([1.0, 2.0], np.float32)),
                               (big[:1], np.array([3.0], np.float32))])
    assert idx.search(big[1:], np.array([1.0], np.float32), 5)[0].tolist() == [1]
    assert idx.stats()["terms"] == 2 and idx.stats()["live_docs"] == 2
