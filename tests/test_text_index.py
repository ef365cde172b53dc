"""TextIndex: BM25 equals a pure-Python reference; pruned top-k equals exhaustive; updates,
deletes, filters, scans and persistence behave as documented."""
import math
import random
from collections import Counter

import numpy as np
import pytest

import unidb.index.sparse.scan as scan_mod
from unidb.errors import ValidationError
from unidb.index.sparse import Analyzer, TextIndex
from unidb.storage import files

WORDS = [f"w{i}" for i in range(40)]
PLAIN = dict(stopwords=None, stemmer=None)   # tokens == words: the reference needs no analyzer


def ref_scores(docs: dict[int, list[str]], query: list[str], k1=1.2, b=0.75) -> dict[int, float]:
    """Brute-force BM25 (Lucene form, ALGORITHMS.md §4) over the live docs."""
    docs = {r: t for r, t in docs.items() if t}
    n = len(docs)
    avgdl = sum(len(t) for t in docs.values()) / n
    df = Counter(w for t in docs.values() for w in set(t))
    qtf = Counter(w for w in query if df[w] > 0)
    out = {}
    for r, toks in docs.items():
        tf = Counter(toks)
        hits = [w for w in qtf if tf[w]]
        if hits:
            out[r] = sum(qtf[w] * math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5)) * tf[w]
                         / (tf[w] + k1 * (1 - b + b * len(toks) / avgdl)) for w in hits)
    return out


def random_doc(rng: random.Random) -> list[str]:
    n = rng.randint(1, 30)
    return [WORDS[min(int(rng.paretovariate(1.0)) - 1, len(WORDS) - 1)] if rng.random() < 0.7
            else rng.choice(WORDS) for _ in range(n)]


@pytest.fixture(params=["maxscore", "exhaustive"])
def planner(request):
    """Tunes an index to one top-k algorithm (the cost rule normally picks) and to tiny
    segments, exercising the buffer, seal and merge paths."""
    def tuned(idx):
        idx.tune(topk=request.param, buffer_docs=16, max_segments=3)
        return idx
    return tuned


def check_against_reference(idx: TextIndex, docs: dict[int, list[str]], rng: random.Random,
                            n_queries=12):
    for _ in range(n_queries):
        q = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        qs = " ".join(q)
        ref = ref_scores(docs, q, idx.k1, idx.b)
        rows, scores = idx.score_all(qs)
        assert sorted(rows.tolist()) == sorted(ref)
        np.testing.assert_allclose(scores, [ref[r] for r in rows.tolist()], rtol=1e-9, atol=1e-6)
        for k in (1, 3, 10, 50):
            pr, ps = idx.search(qs, k)
            er, es = idx.search(qs, k, exhaustive=True)
            assert pr.tolist() == er.tolist() and ps.tolist() == es.tolist()
            assert er.tolist() == rows[:k].tolist()
        sample = np.array(rng.sample(sorted(docs) + [10**9], min(8, len(docs) + 1)))
        got = idx.scores_for(qs, sample)
        for r, s in zip(sample.tolist(), got.tolist()):
            if r in ref:
                assert s == pytest.approx(ref[r], rel=1e-9, abs=1e-6)
            else:
                assert math.isnan(s)
        assert (idx.match_mask(qs, sample) == np.isin(sample, list(ref))).all()
        if ref:
            assert idx.upper_bound(qs) >= max(ref.values()) - 1e-9


def test_bm25_equals_reference_through_updates(planner):
    rng = random.Random(7)
    idx = planner(TextIndex(Analyzer(**PLAIN), k1=1.2, b=0.75))
    docs: dict[int, list[str]] = {}
    next_row = 0
    for step in range(12):
        n = rng.choice([1, 5, 40])
        rows = np.arange(next_row, next_row + n)
        next_row += n
        texts = [random_doc(rng) for _ in range(n)]
        idx.add(rows, [" ".join(t) for t in texts])
        docs.update(zip(rows.tolist(), texts))
        if step % 3 == 2:
            gone = rng.sample(sorted(docs), len(docs) // 5)
            assert idx.delete(gone + [10**9]) == len(gone)
            for g in gone:
                del docs[g]
        if step == 7:
            idx.merge()
        assert len(idx) == len(docs)
        check_against_reference(idx, docs, rng, n_queries=4)


def test_other_bm25_parameters_and_repeated_query_terms():
    rng = random.Random(3)
    idx = TextIndex(Analyzer(**PLAIN), k1=0.9, b=0.4)
    docs = {i: random_doc(rng) for i in range(60)}
    idx.add(np.array(list(docs)), [" ".join(t) for t in docs.values()])
    check_against_reference(idx, docs, rng)
    a = idx.score_all("w1 w1 w2")[1]
    b = idx.score_all("w1 w2")[1]
    assert not np.array_equal(a, b)      # a repeated query term counts twice (as in Lucene)


def test_ties_broken_by_smaller_row_id(planner):
    idx = planner(TextIndex(Analyzer(**PLAIN)))
    idx.add(np.array([50, 7, 30, 9]), ["apple pie", "apple pie", "apple pie", "banana"])
    rows, scores = idx.search("apple", 2)
    assert rows.tolist() == [7, 30] and scores[0] == scores[1]


def test_allow_filter_is_exact(planner):
    rng = random.Random(11)
    idx = planner(TextIndex(Analyzer(**PLAIN)))
    docs = {i: random_doc(rng) for i in range(200)}
    idx.add(np.arange(200), [" ".join(t) for t in docs.values()])

    def even(rows):
        return rows % 2 == 0

    for _ in range(10):
        q = [rng.choice(WORDS) for _ in range(3)]
        ref = ref_scores(docs, q)
        want = sorted((r for r in ref if r % 2 == 0), key=lambda r: (-ref[r], r))[:10]
        rows, scores = idx.search(" ".join(q), 10, allow=even)
        ex = idx.search(" ".join(q), 10, allow=even, exhaustive=True)
        assert rows.tolist() == ex[0].tolist()
        np.testing.assert_allclose(scores, [ref[r] for r in want], atol=1e-6)


def test_updates_visible_immediately():
    idx = TextIndex()
    idx.add(np.array([1, 2]), ["aspirin reduces heart attacks", "statins lower cholesterol"])
    assert idx.search("aspirin", 5)[0].tolist() == [1]
    idx.add(np.array([3]), ["aspirin and heart attack risk"])
    assert sorted(idx.search("aspirin", 5)[0].tolist()) == [1, 3]
    idx.delete([1])
    assert idx.search("aspirin", 5)[0].tolist() == [3]
    assert idx.search("cholesterol", 5)[0].tolist() == [2]
    with pytest.raises(ValidationError, match="already indexed"):
        idx.add(np.array([3]), ["again"])
    with pytest.raises(ValidationError, match="duplicate"):
        idx.add(np.array([8, 8]), ["a", "brandnewword"])
    assert idx.search("brandnewword", 5)[0].tolist() == []   # rejected batch changed nothing
    idx.add(np.array([4, 5]), [None, ""])          # nothing to index: rows left out
    assert len(idx) == 2
    assert idx.search("nothing-known", 5)[0].tolist() == []
    assert idx.search("aspirin", 0)[0].tolist() == []


def test_scan_yields_exact_order(planner):
    rng = random.Random(5)
    idx = planner(TextIndex(Analyzer(**PLAIN)))
    idx.add(np.arange(300), [" ".join(random_doc(rng)) for _ in range(300)])
    q = "w0 w3 w17"
    scan = scan_mod.IndexScan(idx, *idx.query_terms(q), first=4)   # small first batches
    assert scan.default_E == 1 and scan.default_w == 1
    rows, dists = [], []
    while (b := scan.next_batch()) is not None:
        rows += b.row_ids.tolist()
        dists += b.distances.tolist()
    ar, asc = idx.score_all(q)
    assert rows == ar.tolist()
    assert dists == (-asc).tolist()


def test_save_load_round_trip_and_cleanup(tmp_path):
    rng = random.Random(9)
    idx = TextIndex(Analyzer(min_length=2), k1=1.1, b=0.7)
    texts = [" ".join(random_doc(rng)) for _ in range(100)]
    idx.add(np.arange(100), texts)
    idx.delete([3, 4, 5])
    idx.add(np.array([200]), ["w1 w2 w3 newword"])      # sits in the buffer until save
    idx.save(tmp_path, covered=42)
    (tmp_path / "seg-999.npz").write_bytes(b"junk")      # unreferenced leftovers of a crash
    (tmp_path / "index.json.tmp").write_bytes(b"half")
    back, covered = TextIndex.load(tmp_path)
    assert covered == 42
    assert not (tmp_path / "seg-999.npz").exists() and not (tmp_path / "index.json.tmp").exists()
    assert back.analyzer.to_dict() == idx.analyzer.to_dict() and back.k1 == 1.1
    assert back.stats()["live_docs"] == idx.stats()["live_docs"] == 98
    for q in ["w1 w2", "w5 newword", "w30 w0 w7"]:
        for a, b in zip(idx.search(q, 10), back.search(q, 10)):
            assert a.tolist() == b.tolist()
    back.delete([200])
    back.add(np.array([201]), ["newword again"])
    assert back.search("newword", 5)[0].tolist() == [201]


def test_crash_before_manifest_keeps_previous_state(tmp_path, monkeypatch):
    idx = TextIndex()
    idx.add(np.array([1, 2]), ["first doc", "second doc"])
    idx.save(tmp_path, covered=1)
    idx.add(np.array([3]), ["third doc"])
    idx.delete([1])

    def crash(path, obj):
        raise OSError("simulated crash")

    monkeypatch.setattr(files, "atomic_write_json", crash)
    with pytest.raises(OSError):
        idx.save(tmp_path, covered=2)
    monkeypatch.undo()
    back, covered = TextIndex.load(tmp_path)
    assert covered == 1
    assert sorted(back.search("doc", 5)[0].tolist()) == [1, 2]
    assert all(p.name.startswith(("seg-0", "live-0", "vocab-", "index.json"))
               for p in tmp_path.iterdir())


def test_stats_and_merge_drop_deleted_docs():
    idx = TextIndex()
    idx.add(np.arange(10), [f"doc number {i}" for i in range(10)])
    idx.merge()                        # seal the buffer (a buffered doc is dropped on delete)
    idx.delete(np.arange(5))
    before = idx.search("doc", 10)
    s = idx.stats()
    assert s["docs"] == 10 and s["live_docs"] == 5 and s["bytes"] > 0
    idx.merge()
    s = idx.stats()
    assert s["docs"] == 5 and s["segments"] == 1
    after = idx.search("doc", 10)
    assert before[0].tolist() == after[0].tolist() and before[1].tolist() == after[1].tolist()
