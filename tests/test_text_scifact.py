"""SciFact (BEIR): exact pruned top-k for all 300 test queries, and retrieval quality.

Quality thresholds (nDCG@10, 300 test queries): BM25 >= 0.665 (BEIR's published figure),
exact dense MiniLM = 0.648, hybrid fusion of the two above both.
"""
import numpy as np
import pytest

from unidb.datasets import load_scifact, shared_data_dir
from unidb.evaluate import ndcg_at_k
from unidb.index.sparse import ScoresSource, IndexSource, TextIndex, exact_fused_topk, fuse_linear, fuse_rrf

pytestmark = pytest.mark.skipif(
    shared_data_dir() is None or not (shared_data_dir() / "scifact").is_dir(),
    reason="SciFact data absent (../shared/data/scifact or $UNIDB_DATA)")


@pytest.fixture(scope="module")
def sf():
    return load_scifact()


@pytest.fixture(scope="module")
def index(sf):
    idx = TextIndex()    # the documented defaults: english analyzer, k1 = 1.2, b = 0.75
    idx.add(np.arange(len(sf.corpus)), [d["title"] + " " + d["text"] for d in sf.corpus])
    return idx


def test_pruned_topk_identical_to_exhaustive_all_queries(sf, index):
    queries = [sf.queries[i]["text"] for i in sf.test_query_indices()]
    assert len(queries) == 300
    for force in ("maxscore", "exhaustive"):  # force MaxScore, then term-at-a-time
        index.tune(topk=force)
        for q in queries:
            for k in (10, 100):
                r, s = index.search(q, k)
                er, es = index.search(q, k, exhaustive=True)
                assert r.tolist() == er.tolist() and s.tolist() == es.tolist(), q
    index.tune(topk="auto")


def run_of(sf, rows_per_query):
    return {sf.queries[i]["_id"]: [sf.doc_ids[r] for r in rows]
            for i, rows in zip(sf.test_query_indices(), rows_per_query)}


def test_quality_bm25_dense_hybrid(sf, index):
    qi = sf.test_query_indices()
    bm25, dense, hybrid = [], [], []
    for i in qi:
        q = sf.queries[i]["text"]
        bm25.append(index.search(q, 10)[0])
        d = ScoresSource.dense(sf.corpus_emb, sf.query_emb[i])
        dense.append(d.scan().next_batch().row_ids[:10])
        rows, _ = exact_fused_topk([IndexSource(index, q), d], "rrf", limit=10)
        hybrid.append(rows)
    n_bm25 = ndcg_at_k(run_of(sf, bm25), sf.test_qrels, 10)
    n_dense = ndcg_at_k(run_of(sf, dense), sf.test_qrels, 10)
    n_hybrid = ndcg_at_k(run_of(sf, hybrid), sf.test_qrels, 10)
    assert n_bm25 >= 0.665
    assert n_dense == pytest.approx(0.648, abs=0.001)
    assert n_hybrid > max(n_bm25, n_dense)


@pytest.mark.parametrize("streamed", [False, True])
def test_exact_hybrid_equals_full_list_fusion(sf, index, streamed):
    # streamed: the planner is forced to MaxScore, so the text source pulls pruned top-k
    # batches and scores rows by random access instead of holding its full list
    index.tune(topk="maxscore" if streamed else "exhaustive")
    for i in sf.test_query_indices()[:40]:
        q = sf.queries[i]["text"]
        d = ScoresSource.dense(sf.corpus_emb, sf.query_emb[i])
        full_text = index.score_all(q)
        for method, fuse in (("rrf", fuse_rrf), ("linear", fuse_linear)):
            want = fuse([full_text, (d.rows, d.scores)], limit=10)
            got = exact_fused_topk([IndexSource(index, q), d], method, limit=10)
            assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    index.tune(topk="auto")


def test_incremental_adds_and_deletes_match_a_rebuild(sf):
    texts = [d["title"] + " " + d["text"] for d in sf.corpus[:1500]]
    queries = [sf.queries[i]["text"] for i in sf.test_query_indices()[:40]]
    inc = TextIndex()
    for i, t in enumerate(texts):                 # one row at a time, querying as we go
        inc.add(np.array([i]), [t])
        if i % 300 == 0:
            assert i in inc.search(texts[i][:200], 1500)[0]
    inc.delete(np.arange(0, 1500, 3))
    fresh = TextIndex()
    keep = [i for i in range(1500) if i % 3]
    fresh.add(np.array(keep), [texts[i] for i in keep])
    for q in queries:
        a, b = inc.search(q, 10), fresh.search(q, 10)
        assert a[0].tolist() == b[0].tolist()
        np.testing.assert_allclose(a[1], b[1], rtol=1e-12)
