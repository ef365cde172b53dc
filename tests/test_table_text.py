"""Text, sparse and hybrid search through the table API: automatic indexes kept current on
every write, MATCH in filters, exact fusion, and SciFact quality."""
from __future__ import annotations

import numpy as np
import pytest

import unidb
from unidb.datasets import load_scifact
from unidb.errors import QueryError
from unidb.evaluate import ndcg_at_k

from conftest import data_dir

DOCS = [
    (1, "Aspirin reduces the risk of heart attack", [1.0, 0.0, 0.0]),
    (2, "Heart attack symptoms in women", [0.9, 0.1, 0.0]),
    (3, "Aspirin and stomach bleeding", [0.0, 1.0, 0.0]),
    (4, "Gardening tips for spring", [0.0, 0.0, 1.0]),
    (5, "Statins lower cholesterol after a heart attack", [0.7, 0.0, 0.3]),
]


@pytest.fixture
def docs(db):
    t = db.create_table("docs", {"id": unidb.Int64(primary_key=True), "body": unidb.Text(),
                                 "year": unidb.Int64(), "sv": unidb.SparseVector(nullable=True),
                                 "emb": unidb.Vector(3, metric="cosine")})
    t.add([{"id": i, "body": b, "year": 2000 + i, "emb": e,
            "sv": {i: 1.0, 100: 0.5 * i}} for i, b, e in DOCS])
    return t


def test_text_search_current_on_every_write(docs):
    ids = [r["id"] for r in docs.search(text="aspirin heart").limit(5).to_list()]
    assert ids[0] == 1 and set(ids) == {1, 2, 3, 5}
    assert all("_score" in r for r in docs.search(text="aspirin").to_list())
    docs.add([{"id": 6, "body": "aspirin aspirin aspirin", "year": 2020,
               "emb": [0.1, 0.9, 0.0]}])
    assert docs.search(text="aspirin").limit(1).to_list()[0]["id"] == 6      # added: visible
    docs.delete(ids=[6])
    assert 6 not in [r["id"] for r in docs.search(text="aspirin").to_list()]  # deleted: gone
    docs.update(where="id = 4", values={"body": "aspirin for plants"})
    assert 4 in [r["id"] for r in docs.search(text="aspirin").to_list()]      # updated: new text
    assert [r["id"] for r in docs.search(text="aspirin").where("year < 2003").to_list()] == [1]
    assert docs.search(text="zebra").to_list() == []


def test_match_filter_and_sparse(docs):
    got = docs.search([1.0, 0.0, 0.0]).where("MATCH(body, 'aspirin')").limit(5).to_list()
    assert {r["id"] for r in got} == {1, 3}
    assert docs.count(where=unidb.match("body", "heart")) == 3
    sp = docs.search(sparse={100: 1.0, 2: 1.0}).limit(3).to_list()
    assert [r["id"] for r in sp] == [5, 2, 4]          # 2.5, then 2.0 (tie: smaller id), 2.0
    with pytest.raises(QueryError, match="Text"):
        docs.search(text="x", text_column="year").to_list()


def test_hybrid_fusion_exact_against_brute_force(docs):
    q = np.array([1.0, 0.0, 0.0])
    rrf = docs.search(q, text="aspirin heart").fuse("rrf", k=60).limit(3).to_list()
    # Brute force RRF over the full lists.
    text_rank = [r["id"] for r in docs.search(text="aspirin heart").limit(100).to_list()]
    vec_rank = [r["id"] for r in docs.search(q).limit(100).to_list()]
    fused = {}
    for lst in (text_rank, vec_rank):
        for rank, i in enumerate(lst, 1):
            fused[i] = fused.get(i, 0) + 1 / (60 + rank)
    want = sorted(fused, key=lambda i: (-fused[i], i))[:3]
    assert [r["id"] for r in rrf] == want
    np.testing.assert_allclose([r["_score"] for r in rrf], [fused[i] for i in want])
    lin = docs.search(q, text="aspirin").fuse("linear", weights={"vector": 1, "text": 2}).limit(2)
    assert len(lin.to_list()) == 2
    ex = docs.search(q, text="aspirin").limit(2).explain()
    assert ex.plan.startswith("exact-fusion") and ex.details["contributions"]
    with pytest.raises(QueryError, match="unknown option"):
        docs.search(q, text="aspirin").fuse("rrf", kk=3).to_list()


@pytest.mark.slow
def test_scifact_quality_bm25_dense_hybrid(tmp_path):
    data_dir("scifact")
    sf = load_scifact()
    db = unidb.connect(tmp_path / "db")
    t = db.create_table("sf", {"doc_id": unidb.String(primary_key=True), "text": unidb.Text(),
                               "emb": unidb.Vector(384, metric="cosine")})
    t.add({"doc_id": sf.doc_ids, "text": [d["title"] + " " + d["text"] for d in sf.corpus],
           "emb": sf.corpus_emb})
    test = sf.test_query_indices()

    def run(make):
        return {sf.queries[i]["_id"]: [r["doc_id"] for r in make(i).limit(10).select(["doc_id"]).to_list()]
                for i in test}
    bm25 = ndcg_at_k(run(lambda i: t.search(text=sf.queries[i]["text"])), sf.test_qrels)
    dense = ndcg_at_k(run(lambda i: t.search(sf.query_emb[i])), sf.test_qrels)
    hybrid = ndcg_at_k(run(lambda i: t.search(sf.query_emb[i], text=sf.queries[i]["text"])),
                       sf.test_qrels)
    assert bm25 >= 0.665, bm25
    assert abs(dense - 0.648) < 0.002, dense
    assert hybrid > max(bm25, dense), (hybrid, bm25, dense)
    db.close()
