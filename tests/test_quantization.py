"""SQ8 first-pass codes (PartitionOptions.quantization): results equal the unquantized index's
for the same probes (the code scan's distance bounds re-rank every possible top-k row), through
inserts, deletes, LIRE splits/merges, clipping of rows outside the trained range and
save/load; recall on the real datasets; the option through the table API."""
from __future__ import annotations


import numpy as np
import pytest

import unidb
from unidb.errors import SchemaError
from unidb.index.iterator import iterate
from unidb.index.partition import PartitionIndex, PartitionOptions, postings
from unidb.index.partition.postings import (STORES, MemoryPostingStore, make_store,
                                            register_store)
from unidb.index.partition.quantize import SQ8, QuantizedArena
from unidb.kernels import partition as K_

from test_partition_index import brute, load_mnist, load_sift, mixture, recall

SMALL = dict(target_posting=40, max_posting=80, merge_threshold=5, reassign_k=16)
K = 10


def pair(rids, x, metric, folder=None, **opts):
    """The same index built twice: plain and with sq8 codes."""
    opts = {**SMALL, **opts}
    a = PartitionIndex.build(rids, x, metric, PartitionOptions(**opts),
                             None if folder is None else folder / "a")
    b = PartitionIndex.build(rids, x, metric, PartitionOptions(**opts, quantization="sq8"),
                             None if folder is None else folder / "b")
    return a, b


def assert_same_results(a, b, q):
    """Batched and one-query results (ids and distances, bit for bit) equal for every probe."""
    for kw in ({}, {"nprobe": 1}, {"nprobe": 3}, {"nprobe": 8}, {"nprobe": 10 ** 6},
               {"eps2": 0.05, "max_partitions": 2}):
        ra, da = a.search(q, K, **kw)
        rb, db = b.search(q, K, **kw)
        np.testing.assert_array_equal(ra, rb, err_msg=str(kw))
        np.testing.assert_array_equal(da, db, err_msg=str(kw))
        for i in range(0, len(q), 7):
            r1, d1 = a.search(q[i], K, **kw)
            r2, d2 = b.search(q[i], K, **kw)
            np.testing.assert_array_equal(r1, r2, err_msg=str(kw))
            np.testing.assert_array_equal(d1, d2, err_msg=str(kw))


def exact_top_k(idx, qp, posts):
    """(ids, finished distances) of the exact top-K over `posts` (query already prepared)."""
    v = idx.view()
    r, d = v.postings.scan_all(qp, idx._mode, v.vmap, np.asarray(posts, dtype=np.int64))
    o = np.lexsort((r, d))
    r, d = r[o], d[o]
    _, first = np.unique(r, return_index=True)
    first.sort()
    r, d = r[first][:K], d[first][:K]
    return r, idx._finish_dist(d)


# ----------------------------------------------------------------------------- options
def test_quantization_option_is_validated():
    assert PartitionOptions().quantization is None
    assert PartitionOptions(quantization="sq8").validate().quantization == "sq8"
    for bad in ("pq", "SQ8", "", 8, ["sq8"]):
        with pytest.raises(ValueError, match="quantization must be one of"):
            PartitionOptions(quantization=bad).validate()

    class PlainStore(MemoryPostingStore):          # a store kind that cannot hold codes
        kind = "plain-test"
        quantizes = False
    register_store(PlainStore)
    try:
        with pytest.raises(ValueError, match="does not support quantization"):
            PartitionOptions(storage="plain-test", quantization="sq8").validate()
        with pytest.raises(ValueError, match="does not support quantization"):
            make_store("plain-test", 4, None, "sq8")
        assert PartitionOptions(storage="plain-test").validate().quantization is None
    finally:
        STORES.pop("plain-test")


def test_option_is_saved_and_the_store_holds_codes(tmp_path):
    rng = np.random.default_rng(0)
    x = mixture(rng, 500)
    idx = PartitionIndex.build(np.arange(500), x, "l2", PartitionOptions(quantization="sq8"))
    assert isinstance(idx.view().postings, QuantizedArena)
    plain = PartitionIndex.build(np.arange(500), x, "l2")
    assert not isinstance(plain.view().postings, QuantizedArena)
    # codes cost dim + 4 bytes per arena row on top of the plain store
    assert idx.stats()["bytes"] > plain.stats()["bytes"]
    idx.save(tmp_path / "i", 7)
    back, covered = PartitionIndex.load(tmp_path / "i")
    assert covered == 7 and back.options.quantization == "sq8"
    assert isinstance(back.view().postings, QuantizedArena)


def test_codes_bound_the_reconstruction_error_with_clipping():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 12)).astype(np.float32)
    x[:, 5] = 2.0                                  # a constant dimension
    sq = SQ8.train(x)
    far = (rng.standard_normal((50, 12)) * 5).astype(np.float32)   # mostly outside the range
    for rows in (x, far):
        codes, err = sq.encode(rows)
        rec = sq.lo.astype(np.float64) + sq.step.astype(np.float64) * codes
        true = np.linalg.norm(rows.astype(np.float64) - rec, axis=1)
        assert np.all(err >= true)
        assert np.all(err <= true * (1 + 1e-6) + 1e-30)
    codes, _ = sq.encode(far)
    assert (codes == 0).any() and (codes == 255).any()          # clipped, not wrapped


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_sq8_equals_unquantized_through_updates_and_reload(metric, tmp_path, monkeypatch):
    # small arenas compact too (the quantizer is retrained on the rows a compaction keeps)
    monkeypatch.setattr(postings, "ARENA_MIN_ROWS", 512)
    rng = np.random.default_rng(11)
    x = mixture(rng, 2500)
    x[100:140] = x[99]                               # copies of one vector: ties by row id
    q = np.concatenate([mixture(rng, 40), x[95:100] + 1e-4])
    rids = np.arange(len(x), dtype=np.int64) * 3 + 1
    a, b = pair(rids, x, metric, merge_threshold=20)
    assert_same_results(a, b, q)
    tid, tdist = brute(rids, x, q, K, metric)
    rb, db = b.search(q, K, nprobe=10 ** 6)
    np.testing.assert_allclose(db, tdist, rtol=1e-6, atol=1e-6)   # cosine: float32 unit vectors
    assert recall(rb, tid) == 1.0

    # inserts far outside the trained range (clipped codes), re-adds, deletes: LIRE splits
    # and merges on both; the unquantized index is the reference
    new = (mixture(rng, 1500) * 2.5 + 4).astype(np.float32)
    nid = np.arange(len(new), dtype=np.int64) * 3 + 10 ** 5
    for ix in (a, b):
        ix.add(nid, new)
        ix.add(rids[:300], x[:300][::-1].copy())       # replace 300 vectors
        ix.delete(rids[500:1900])
        ix.delete(nid[::4])
    for ix in (a, b):
        c = ix.stats()
        assert c["splits"] > 0 and c["merges"] > 0 and c["arena_compactions"] > 0, c
    qq = np.concatenate([q, new[:20] + 0.01])
    assert_same_results(a, b, qq)

    a.save(tmp_path / "a", 1)
    b.save(tmp_path / "b", 1)
    a2, _ = PartitionIndex.load(tmp_path / "a")
    b2, _ = PartitionIndex.load(tmp_path / "b")     # retrained on the loaded rows
    assert_same_results(a2, b2, qq)
    assert_same_results(a, b2, qq)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_coarse_codes_still_give_the_exact_top_k(metric):
    """A few far outliers stretch every dimension's range, so the bulk of the rows shares a
    handful of codes: the first pass can barely tell them apart and the bounds alone decide
    which rows are re-ranked."""
    rng = np.random.default_rng(21)
    centre = np.full(8, 10.0)
    x = (centre + 0.05 * rng.standard_normal((3000, 8))).astype(np.float32)
    x[:6] = rng.choice([-400.0, 400.0], (6, 8))
    rids = np.arange(len(x), dtype=np.int64)
    a, b = pair(rids, x, metric)
    stored = b.view().postings
    bulk = stored.vecs[np.isin(stored.rids, rids[6:]) & (np.arange(len(stored.rids)) <
                                                          len(stored.rids))]
    # codes are coarse: one step is wider than the bulk's spread in every dimension
    assert np.all(stored.sq.step > bulk[:2000].std(axis=0))
    q = (centre + 0.05 * rng.standard_normal((60, 8))).astype(np.float32)
    # The plain index answers these queries by its near-tie fallback (the outliers' norms
    # make its float32 rounding bound huge), which re-navigates by exact distance and may
    # probe other partitions than its float32 navigation picked: centroids here are closer
    # than that rounding. sq8 needs no fallback, so it is checked against an exact pass over
    # the partitions its own navigation picked, one query and batched.
    qp = b._check_queries(q)
    v = b.view()
    nav = v.routing.nav_arrays()
    for npr in (1, 3, 10 ** 6):
        ids, dist = b.search(q, K, nprobe=npr)
        posts, qidx, _ = v.routing.navigate(qp, metric == "ip", np.inf, npr)
        for i in range(len(q)):
            want = exact_top_k(b, qp[i], posts[qidx == i])
            np.testing.assert_array_equal(ids[i], want[0])
            np.testing.assert_array_equal(dist[i], want[1])
            one_posts = K_.probe_one(qp[i], b._mode, npr, np.inf, False, *nav)[0]
            want = exact_top_k(b, qp[i], one_posts)
            got = b.search(q[i], K, nprobe=npr)
            np.testing.assert_array_equal(got[0][0], want[0])
            np.testing.assert_array_equal(got[1][0], want[1])


def test_sq8_equals_unquantized_from_an_empty_index_and_on_disk(tmp_path):
    """An index created empty trains on its first rows; later rows far outside that range
    clip. The disk store keeps codes in memory next to its mapped vectors."""
    rng = np.random.default_rng(5)
    first = mixture(rng, 30, dim=8)
    more = (mixture(rng, 3000, dim=8) * 4 - 3).astype(np.float32)
    opts = dict(SMALL, storage="disk")
    a = PartitionIndex(8, "l2", PartitionOptions(**opts), tmp_path / "a")
    b = PartitionIndex(8, "l2", PartitionOptions(**opts, quantization="sq8"), tmp_path / "b")
    for ix in (a, b):
        ix.add(np.arange(30), first)
        for s in range(0, 3000, 500):
            ix.add(np.arange(100 + s, 600 + s), more[s:s + 500])
        ix.delete(np.arange(100, 2000, 2))
    assert isinstance(b.view().postings, QuantizedArena)
    assert isinstance(b.view().postings.codes, np.ndarray) and \
        not isinstance(b.view().postings.codes, np.memmap)
    assert isinstance(b.view().postings.vecs, np.memmap)
    assert b.stats()["splits"] > 0
    q = mixture(rng, 50, dim=8) * 4 - 3
    assert_same_results(a, b, q)
    a.close()
    b.close()


def test_scan_and_filtered_search_stay_exact():
    rng = np.random.default_rng(2)
    x = mixture(rng, 2000)
    rids = np.arange(2000, dtype=np.int64)
    a, b = pair(rids, x, "l2")
    q = mixture(rng, 5)
    allow = lambda r: r % 5 == 0                      # noqa: E731
    np.testing.assert_array_equal(a.search(q, K, allow=allow)[0], b.search(q, K, allow=allow)[0])
    for qi in q:
        got = [(int(r), float(d)) for batch in iterate(b.scan(qi, batch_partitions=2))
               for r, d in zip(batch.row_ids, batch.distances)]
        want = [(int(r), float(d)) for batch in iterate(a.scan(qi, batch_partitions=2))
                for r, d in zip(batch.row_ids, batch.distances)]
        assert got == want
        assert sorted(r for r, _ in got) == list(range(2000))


# ----------------------------------------------------------------------------- recall
def test_recall_siftsmall_and_mnist_at_defaults():
    for load in (load_sift, load_mnist):
        x, q, gt = load()
        plain = PartitionIndex.build(np.arange(len(x)), x, "l2")
        idx = PartitionIndex.build(np.arange(len(x)), x, "l2",
                                   PartitionOptions(quantization="sq8"))
        ids, dist = idx.search(q, K)
        assert recall(ids, gt) >= 0.95
        np.testing.assert_array_equal(ids, plain.search(q, K)[0])
        one = np.stack([idx.search(q[i], K)[0][0] for i in range(0, len(q), 10)])
        np.testing.assert_array_equal(one, ids[::10])


# ----------------------------------------------------------------------------- table API
def _table(db, name, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    n = 3000
    words = np.array(["apple", "pear", "plum", "fig", "kiwi", "lime"])
    t = db.create_table(name, {"id": unidb.Int64(primary_key=True), "a": unidb.Int64(),
                               "body": unidb.Text(), "v": unidb.Vector(16)})
    t.add({"id": np.arange(n), "a": rng.integers(0, 100, n),
           "body": [" ".join(rng.choice(words, 3)) for _ in range(n)],
           "v": mixture(rng, n)})
    return t


def test_table_api_filtered_range_and_hybrid_search(tmp_path):
    db = unidb.connect(tmp_path / "db")
    tq = _table(db, "q")
    tp = _table(db, "p")
    with pytest.raises(SchemaError, match="quantization"):
        tq.create_index("v", kind="partition", quantization="pq")
    tq.create_index("v", kind="partition", quantization="sq8", target_posting=40)
    tp.create_index("v", kind="partition", target_posting=40)
    q = mixture(np.random.default_rng(9), 12)

    def rows(b):
        return [[(r["id"], r["_distance"]) for r in rs] for rs in b.to_list()]

    for where in ("a < 50", "a < 3"):
        got = rows(tq.search(q).where(where).limit(K).select(["id"]))
        want = rows(tq.search(q).where(where).limit(K).select(["id"]).params(exact=True))
        assert [[i for i, _ in g] for g in got] == [[i for i, _ in w] for w in want]
        np.testing.assert_allclose([[d for _, d in g] for g in got],
                                   [[d for _, d in w] for w in want], rtol=1e-6)
        assert got == rows(tp.search(q).where(where).limit(K).select(["id"]))
    # range search: every row within the radius, exact distances
    radius = float(np.median([rs[-1]["_distance"] for rs in
                              tq.search(q).limit(K).params(exact=True).to_list()]))
    got = rows(tq.search(q).distance_range(max=radius).select(["id"]))
    want = rows(tq.search(q).distance_range(max=radius).select(["id"]).params(exact=True))
    assert [sorted(i for i, _ in g) for g in got] == [sorted(i for i, _ in w) for w in want]
    assert got == rows(tp.search(q).distance_range(max=radius).select(["id"]))
    # hybrid: vector + text fused; the quantized index's vector side equals the plain one's
    for qi in q[:4]:
        hq = tq.search(qi, text="apple fig").limit(K).select(["id"]).to_list()
        hp = tp.search(qi, text="apple fig").limit(K).select(["id"]).to_list()
        assert [(r["id"], r["_score"]) for r in hq] == [(r["id"], r["_score"]) for r in hp]
    stats = tq.index_stats("v")
    assert stats["live_vectors"] == 3000
    db.close()
