"""Quality metrics: recall@k, under-filled counts, nDCG@k (hand-computed), exact k-NN."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unidb.evaluate import exact_knn, ids_from_lists, ndcg_at_k, recall_at_k, underfilled

TRUE = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])


# ----------------------------------------------------------------------------------- recall


def test_recall_perfect_and_order_within_k_does_not_matter():
    assert recall_at_k(TRUE, TRUE, 4) == 1.0
    assert recall_at_k(TRUE[:, ::-1], TRUE, 4) == 1.0


def test_recall_only_first_k_of_each_side_count():
    found = np.array([[9, 1, 2, 3], [5, 9, 9, 6]])
    # k=2: query 0 found {9,1} vs true {1,2} -> 1/2; query 1 {5,9} vs {5,6} -> 1/2
    assert recall_at_k(found, TRUE, 2) == pytest.approx(0.5)


def test_recall_short_and_padded_results_count_missing_rows_as_misses():
    assert recall_at_k([[1, 2], []], TRUE, 4) == pytest.approx((2 / 4 + 0) / 2)
    padded = np.array([[1, 2, -1, -1], [-1, -1, -1, -1]])
    assert recall_at_k(padded, TRUE, 4) == pytest.approx(0.25)
    assert recall_at_k(np.array([[1], [5]]), TRUE, 4) == pytest.approx(0.25)   # narrow array
    assert recall_at_k([None, [5, 6, 7, 8]], TRUE, 4) == pytest.approx(0.5)


def test_recall_duplicate_found_ids_count_once():
    assert recall_at_k([[1, 1, 1, 1], [5, 6, 7, 8]], TRUE, 4) == pytest.approx((0.25 + 1) / 2)


def test_recall_padded_ground_truth_scores_against_the_ids_that_exist():
    true = np.array([[1, 2, -1, -1], [-1, -1, -1, -1]])
    # query 0: 2 true ids exist, 1 found -> 1/2; query 1: nothing to find -> 1.0
    assert recall_at_k([[1, 9, 9, 9], []], true, 4) == pytest.approx(0.75)


def test_recall_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="2 queries"):
        recall_at_k([[1, 2, 3, 4]], TRUE, 4)
    with pytest.raises(ValueError, match="at least k=5"):
        recall_at_k(TRUE, TRUE, 5)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(TRUE, TRUE, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 30), max_size=12),
                          st.lists(st.integers(0, 30), min_size=5, max_size=5, unique=True)),
                min_size=1, max_size=8),
       st.integers(1, 5))
def test_recall_matches_set_definition(pairs, k):
    found = [f for f, _ in pairs]
    true = np.array([t for _, t in pairs])
    expected = np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in pairs])
    assert recall_at_k(found, true, k) == pytest.approx(expected)


def test_underfilled_counts_lists_shorter_than_min_k_expected():
    found = [[1, 2, 3], [1, -1, -1], [], [4, 5]]
    assert underfilled(found, 3) == 3
    # Only 2 rows can match query 3 and 0 can match query 2: those are full.
    assert underfilled(found, 3, expected_counts=[3, 3, 0, 2]) == 1
    assert underfilled(np.array([[1, 2], [3, -1]]), 2) == 1
    assert underfilled(np.array([[1, 2], [3, -1]]), 2, expected_counts=1) == 0


def test_ids_from_lists_pads_and_truncates():
    np.testing.assert_array_equal(ids_from_lists([[1, 2, 3], [4]], 2), [[1, 2], [4, -1]])


# ------------------------------------------------------------------------------------- nDCG


def test_ndcg_hand_computed_example():
    qrels = {"q1": {"d1": 1, "d2": 1, "d3": 2}, "q2": {"d9": 1}}
    run = {"q1": ["d3", "dx", "d1"], "q3": ["d1"]}   # q2 has no results; q3 is not judged
    # q1 DCG@3 = 2/log2(2) + 0/log2(3) + 1/log2(4) = 2 + 0 + 0.5 = 2.5
    # q1 IDCG@3 from rels sorted [2, 1, 1] = 2/1 + 1/log2(3) + 1/2 = 3.1309298 -> nDCG 0.7984849
    # q2 = 0 (in qrels, no results); q3 ignored. Mean over qrels queries = 0.7984849 / 2
    q1 = 2.5 / (2 + 1 / math.log2(3) + 0.5)
    assert q1 == pytest.approx(0.7984849, abs=1e-7)
    assert ndcg_at_k(run, qrels, k=3) == pytest.approx(q1 / 2)


def test_ndcg_cutoff_and_ideal_use_only_top_k():
    qrels = {"q": {"a": 1, "b": 1, "c": 1}}
    # k=1: DCG = 0 (x irrelevant), IDCG = 1 -> 0; k=2: DCG = 1/log2(3), IDCG = 1 + 1/log2(3)
    assert ndcg_at_k({"q": ["x", "a"]}, qrels, k=1) == 0.0
    assert ndcg_at_k({"q": ["x", "a"]}, qrels, k=2) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_ndcg_score_dicts_rank_like_trec_eval_and_ids_compare_as_strings():
    qrels = {1: {"7": 1}}
    # Scores tie: trec_eval orders ties by doc id descending, so "7" precedes "3".
    assert ndcg_at_k({"1": {3: 0.5, 7: 0.5}}, qrels, k=1) == 1.0
    assert ndcg_at_k({"1": {3: 0.9, 7: 0.5}}, qrels, k=1) == 0.0
    # A repeated doc counts once, at its first rank.
    assert ndcg_at_k({"1": ["7", "7"]}, {"1": {"7": 1, "8": 1}}, k=2) == pytest.approx(
        1 / (1 + 1 / math.log2(3)))


def test_ndcg_rejects_empty_qrels_and_bad_k():
    with pytest.raises(ValueError, match="qrels is empty"):
        ndcg_at_k({"q": ["a"]}, {}, k=10)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k({"q": ["a"]}, {"q": {"a": 1}}, k=0)


# -------------------------------------------------------------------------------- exact kNN


def _naive_knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str):
    b, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "l2":
        scores = ((q[:, None, :] - b[None]) ** 2).sum(-1)
    elif metric == "cosine":
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        scores = 1 - qn @ bn.T
    else:
        scores = -(q @ b.T)
    ids = np.stack([np.lexsort((np.arange(len(b)), s))[:k] for s in scores])
    return ids, np.take_along_axis(scores, ids, 1)


@pytest.mark.parametrize("blocks", [None, (7, 256)], ids=["one-block", "many-blocks"])
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_exact_knn_matches_naive_brute_force_with_ties(metric, blocks):
    # small blocks exercise the shortlist merge across base and query blocks
    sizes = {} if blocks is None else {"query_block": blocks[0], "base_block": blocks[1]}
    rng = np.random.default_rng(7)
    base = rng.standard_normal((3000, 16)).astype(np.float32)
    base[2000:2010] = base[:10]          # exact duplicates: ties must go to the smaller id
    queries = np.vstack([rng.standard_normal((20, 16)), base[:3]]).astype(np.float32)
    ids, dists = exact_knn(base, queries, 10, metric, **sizes)
    ref_ids, ref_scores = _naive_knn(base, queries, 10, metric)
    np.testing.assert_array_equal(ids, ref_ids)
    expected = {"l2": np.sqrt, "cosine": np.positive, "ip": np.negative}[metric](ref_scores)
    np.testing.assert_allclose(dists, expected, rtol=1e-9, atol=1e-9)
    assert ids.dtype == np.int64 and dists.dtype == np.float64


def test_exact_knn_pads_when_k_exceeds_rows_and_rejects_bad_input():
    ids, dists = exact_knn(np.eye(3, dtype=np.float32), np.ones((1, 3), np.float32), 5)
    np.testing.assert_array_equal(ids, [[0, 1, 2, -1, -1]])
    assert np.isinf(dists[0, 3:]).all()
    with pytest.raises(ValueError, match="unknown metric"):
        exact_knn(np.eye(3), np.eye(3), 1, "hamming")
    with pytest.raises(ValueError, match="same dimension"):
        exact_knn(np.eye(3), np.eye(4), 1)


def test_exact_knn_ties_across_the_shortlist_boundary_go_to_smaller_ids():
    # 600 equidistant rows: the float32 shortlist cannot prove itself, so the exact fallback
    # decides, and the k smallest ids of the tie must win.
    rng = np.random.default_rng(1)
    base = np.vstack([rng.standard_normal((100, 8)) + 50, np.ones((600, 8))]).astype(np.float32)
    base = base[::-1].copy()             # the tied rows now hold ids 0..599
    ids, dists = exact_knn(base, np.zeros((2, 8), np.float32), 5)
    np.testing.assert_array_equal(ids, [[0, 1, 2, 3, 4]] * 2)
    np.testing.assert_allclose(dists, np.sqrt(8.0))
