"""Exact fused top-k equals brute-force fusion of the FULL score lists (RRF and linear)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from unidb.errors import ValidationError
from unidb.index.sparse import (Analyzer, ScoresSource, IndexSource, TextIndex, exact_fused_topk,
                                fuse_linear, fuse_rrf)


def random_source(rng, universe: int, coverage: float, ties: bool):
    rows = np.flatnonzero(rng.random(universe) < coverage)
    scores = rng.integers(0, 5, len(rows)).astype(float) if ties else rng.normal(size=len(rows))
    return rows, scores


class Streamed:
    """A source with only the minimal protocol (no full list, optionally no ranks_for): forces
    the general pull loop of exact_fused_topk instead of the in-memory fast path."""

    def __init__(self, src: ScoresSource, ranks: bool):
        self.src = src
        self.scan, self.scores_for, self.score_stats = src.scan, src.scores_for, src.score_stats
        if ranks:
            self.ranks_for = src.ranks_for


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31), n_src=st.integers(1, 3), limit=st.integers(1, 25),
       ties=st.booleans(), method=st.sampled_from(["rrf", "linear-minmax", "linear-zscore"]),
       first=st.sampled_from([1, 4, 64]), path=st.sampled_from(["full", "pull", "pull+ranks"]))
def test_exact_equals_brute_force(seed, n_src, limit, ties, method, first, path):
    rng = np.random.default_rng(seed)
    lists = [random_source(rng, 400, rng.choice([0.05, 0.5, 1.0]), ties) for _ in range(n_src)]
    sources = [ScoresSource(r, s, first=first) for r, s in lists]
    if path != "full":
        sources = [Streamed(s, path == "pull+ranks") for s in sources]
    if method == "rrf":
        want = fuse_rrf(lists, k=60, limit=limit)
        got = exact_fused_topk(sources, "rrf", k=60, limit=limit)
    else:
        norm = method.split("-")[1]
        w = rng.random(n_src).tolist()
        want = fuse_linear(lists, w, normalize=norm, limit=limit)
        got = exact_fused_topk(sources, "linear", weights=w, normalize=norm, limit=limit)
    assert got[0].tolist() == want[0].tolist()
    assert got[1].tolist() == want[1].tolist()


def test_text_plus_dense_exact_fusion():
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.choice(words, rng.integers(1, 15))) for _ in range(500)]
    idx = TextIndex(Analyzer(stopwords=None, stemmer=None))
    idx.add(np.arange(500), texts)
    X = rng.normal(size=(500, 16)).astype(np.float32)
    for _ in range(10):
        q = " ".join(rng.choice(words, 3))
        qv = rng.normal(size=16).astype(np.float32)
        dense = ScoresSource.dense(X, qv)
        full_text = idx.score_all(q)
        full_dense = (dense.rows, dense.scores)
        for method in ("rrf", "linear"):
            fuse = fuse_rrf if method == "rrf" else fuse_linear
            want = fuse([full_text, full_dense], limit=10)
            got = exact_fused_topk([IndexSource(idx, q, first=8), ScoresSource.dense(X, qv)],
                                   method, limit=10)
            assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
        even = lambda r: r % 2 == 0
        keep = full_text[0] % 2 == 0
        want = fuse_rrf([(full_text[0][keep], full_text[1][keep]), full_dense], limit=10)
        got = exact_fused_topk([IndexSource(idx, q, allow=even), dense], limit=10)
        assert got[0].tolist() == want[0].tolist()


def test_truncated_fusion_basics():
    a = (np.array([1, 2, 3]), np.array([3.0, 2.0, 1.0]))
    b = (np.array([3, 4]), np.array([10.0, 5.0]))
    rows, fused = fuse_rrf([a, b], k=60, limit=None)
    assert rows[0] == 3 and fused[0] == pytest.approx(1 / 63 + 1 / 61)
    rows, fused = fuse_linear([a, b], [1.0, 1.0], limit=2)
    assert rows.tolist() == [1, 3] and fused.tolist() == [1.0, 1.0]   # tie: smaller row id
    with pytest.raises(ValidationError, match="normalize"):
        fuse_linear([a], normalize="max")
    with pytest.raises(ValidationError, match=">= 0"):
        fuse_linear([a, b], [1.0, -1.0])
