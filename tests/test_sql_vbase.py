"""The eight query shapes of the VBase evaluation, in SQL, against exact numpy answers.

Schema (generated, recipe-like): recipe(id, popularity 0..10000, category, description TEXT,
img VECTOR(256), txt VECTOR(256)) and tag(id, img VECTOR(256)). Without an index every answer
must equal brute force exactly; with a partition index recall must be >= 0.95.
"""
import numpy as np
import pytest

import unidb

N, NT, DIM, K = 2000, 150, 256, 50
WORDS = ["salt", "sugar", "basil", "lemon", "garlic", "cumin", "honey", "chili"]


def _vectors(rng, n):
    # A few clusters so that distances spread out (pure Gaussians in 256-d all look alike).
    centers = rng.standard_normal((16, DIM))
    return (centers[rng.integers(0, 16, n)] + 0.6 * rng.standard_normal((n, DIM))
            ).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(7)
    db = unidb.connect(tmp_path_factory.mktemp("vbase") / "db")
    db.sql("CREATE TABLE recipe (id BIGINT PRIMARY KEY, popularity BIGINT NOT NULL, "
           "category VARCHAR NOT NULL, description TEXT NOT NULL, img VECTOR(256) NOT NULL, "
           "txt VECTOR(256) NOT NULL)")
    db.sql("CREATE TABLE tag (id BIGINT PRIMARY KEY, name VARCHAR, img VECTOR(256) NOT NULL)")
    img, txt = _vectors(rng, N), _vectors(rng, N)
    pop = rng.integers(0, 10_001, N)
    desc = [" ".join(rng.choice(WORDS, 3)) for _ in range(N)]
    cat = [f"c{int(x)}" for x in rng.integers(0, 6, N)]
    recipe = db.open_table("recipe")
    recipe.add({"id": np.arange(N // 2), "popularity": pop[:N // 2], "category": cat[:N // 2],
                "description": desc[:N // 2], "img": img[:N // 2], "txt": txt[:N // 2]})
    recipe.flush()                      # two segments, so Arrow views span several chunks
    recipe.add({"id": np.arange(N // 2, N), "popularity": pop[N // 2:],
                "category": cat[N // 2:], "description": desc[N // 2:], "img": img[N // 2:],
                "txt": txt[N // 2:]})
    timg = _vectors(rng, NT)
    db.open_table("tag").add({"id": np.arange(NT) + 10_000, "name": [f"t{i}" for i in range(NT)],
                              "img": timg})
    q1, q2 = img[3] + 0.3 * rng.standard_normal(DIM), txt[5] + 0.3 * rng.standard_normal(DIM)
    yield {"db": db, "img": img.astype(np.float64), "txt": txt.astype(np.float64), "pop": pop,
           "desc": np.array(desc), "cat": np.array(cat), "timg": timg.astype(np.float64),
           "q1": q1, "q2": q2}
    db.close()


def l2(m, q):
    return np.sqrt(((m - q) ** 2).sum(axis=1))


def topk(score, mask, k):
    ids = np.flatnonzero(mask)
    return ids[np.argsort(score[ids], kind="stable")[:k]].tolist()


def ids(table, col="id"):
    return table.column(col).to_pylist()


def test_q1_topk_one_vector(data):
    db, q = data["db"], data["q1"]
    got = db.sql("SELECT id, img <-> $1 AS d FROM recipe ORDER BY img <-> $1 LIMIT 50", [q])
    d = l2(data["img"], q)
    assert ids(got) == topk(d, np.ones(N, bool), K)
    np.testing.assert_allclose(got.column("d").to_numpy(), np.sort(d)[:K], rtol=1e-5)


def test_q2_topk_with_scalar_filter(data):
    db, q = data["db"], data["q1"]
    for p in (300, 5000):              # 3% and 50% selectivity
        got = db.sql("SELECT id FROM recipe WHERE popularity <= $2 ORDER BY img <-> $1 "
                     "LIMIT 50", [q, p])
        assert ids(got) == topk(l2(data["img"], q), data["pop"] <= p, K)


def test_q3_topk_with_not_like(data):
    db, q = data["db"], data["q1"]
    got = db.sql("SELECT id FROM recipe WHERE description NOT LIKE '%garlic%' "
                 "ORDER BY img <-> ? LIMIT 50", [q])
    mask = np.array(["garlic" not in s for s in data["desc"]])
    assert ids(got) == topk(l2(data["img"], q), mask, K)


def _two(data):
    return l2(data["img"], data["q1"]) + 0.5 * l2(data["txt"], data["q2"])


def test_q4_multi_vector(data):
    db = data["db"]
    got = db.sql("SELECT id, (img <-> $1) + 0.5 * (txt <-> $2) AS score FROM recipe "
                 "ORDER BY (img <-> $1) + 0.5 * (txt <-> $2) LIMIT 50",
                 [data["q1"], data["q2"]])
    s = _two(data)
    assert ids(got) == topk(s, np.ones(N, bool), K)
    np.testing.assert_allclose(got.column("score").to_numpy(), np.sort(s)[:K], rtol=1e-5)


def test_q5_multi_vector_with_scalar_filter(data):
    db = data["db"]
    got = db.sql("SELECT id FROM recipe WHERE popularity <= 2000 "
                 "ORDER BY img <-> $1 + txt <-> $2 * 0.5 LIMIT 50",
                 [data["q1"], data["q2"]])
    # `<->` binds like `*`: img <-> $1 + txt <-> $2 * 0.5 is (img <-> $1) + ((txt <-> $2) * 0.5)
    assert ids(got) == topk(_two(data), data["pop"] <= 2000, K)


def test_q6_multi_vector_with_like(data):
    db = data["db"]
    got = db.sql("SELECT id FROM recipe WHERE description NOT LIKE '%lemon%' "
                 "ORDER BY l2_distance(img, $1) + l2_distance(txt, $2) / 2 LIMIT 50",
                 [data["q1"], data["q2"]])
    mask = np.array(["lemon" not in s for s in data["desc"]])
    assert ids(got) == topk(_two(data), mask, K)


def _radius(d, count):
    """A radius holding about `count` distances, in the widest gap nearby (no float ties)."""
    s = np.sort(d)
    lo, hi = max(count - 20, 1), min(count + 20, len(s) - 1)
    gaps = s[lo:hi + 1] - s[lo - 1:hi]
    i = lo + int(np.argmax(gaps))
    return float((s[i - 1] + s[i]) / 2)


def test_q7_range(data):
    db, q = data["db"], data["q1"]
    d = l2(data["img"], q)
    r = _radius(d, 120)
    got = db.sql("SELECT id, img <-> $1 AS dist FROM recipe WHERE img <-> $1 < $2", [q, r])
    assert sorted(ids(got)) == np.flatnonzero(d < r).tolist()
    assert (got.column("dist").to_numpy() < r).all()
    # with a scalar filter, and with the bound written the other way round
    got = db.sql("SELECT id FROM recipe WHERE $2 >= img <-> $1 AND popularity > 5000",
                 [q, r])
    assert sorted(ids(got)) == np.flatnonzero((d <= r) & (data["pop"] > 5000)).tolist()


def test_q8_similarity_join(data):
    db = data["db"]
    a, b = data["img"], data["timg"]
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    dist = np.sqrt(np.maximum(sq, 0))
    r = _radius(dist.ravel(), 300)
    got = db.sql("SELECT r.id AS rid, t.id AS tid, r.img <-> t.img AS d FROM recipe r "
                 "JOIN tag t ON r.img <-> t.img < $1", [r])
    want = {(int(a), int(b) + 10_000) for a, b in zip(*np.nonzero(dist < r))}
    pairs = set(zip(ids(got, "rid"), ids(got, "tid")))
    assert pairs == want and got.num_rows == len(want)
    d = got.column("d").to_numpy()
    np.testing.assert_allclose(d, dist[np.array(ids(got, "rid")),
                                        np.array(ids(got, "tid")) - 10_000], rtol=1e-5)
    # a filter on one side and an aggregate over the pairs
    got = db.sql("SELECT t.name, count(*) AS n FROM recipe r JOIN tag t "
                 "ON l2_distance(t.img, r.img) <= $1 WHERE r.popularity < 5000 "
                 "GROUP BY t.name ORDER BY n DESC, t.name", [r])
    rows = np.nonzero((dist <= r) & (data["pop"] < 5000)[:, None])
    counts = {}
    for b in rows[1]:
        counts[f"t{b}"] = counts.get(f"t{b}", 0) + 1
    assert dict(zip(got.column("name").to_pylist(), got.column("n").to_pylist())) == counts


def test_aggregate_over_vector_topk(data):
    db, q = data["db"], data["q1"]
    got = db.sql("SELECT category, count(*) AS n, avg(popularity) AS p FROM "
                 "(SELECT * FROM recipe ORDER BY img <-> $1 LIMIT 100) AS top "
                 "GROUP BY category ORDER BY category", [q])
    top = topk(l2(data["img"], q), np.ones(N, bool), 100)
    cats = data["cat"][top]
    want = sorted(set(cats))
    assert got.column("category").to_pylist() == want
    assert got.column("n").to_pylist() == [int((cats == c).sum()) for c in want]
    np.testing.assert_allclose(got.column("p").to_numpy(),
                               [data["pop"][top][cats == c].mean() for c in want])
    # the same through a CTE with a window function
    got = db.sql("WITH top AS (SELECT id, category, img <-> $1 AS d FROM recipe "
                 "ORDER BY d LIMIT 100) SELECT id, rank() OVER (PARTITION BY category "
                 "ORDER BY d) AS rk FROM top ORDER BY d LIMIT 5", [q])
    assert ids(got) == top[:5] and got.column("rk").to_pylist()[0] == 1


def test_vector_result_joined_with_second_table(data):
    db, q = data["db"], data["q1"]
    got = db.sql("SELECT v.id, t.name FROM (SELECT id FROM recipe WHERE popularity < 8000 "
                 "ORDER BY img <-> $1 LIMIT 20) v JOIN tag t ON t.id = v.id + 10000 "
                 "ORDER BY v.id", [q])
    top = topk(l2(data["img"], q), data["pop"] < 8000, 20)
    want = sorted(i for i in top if i < NT)
    assert ids(got) == want and got.column("name").to_pylist() == [f"t{i}" for i in want]


def test_vector_subquery_and_tag_lookup(data):
    db = data["db"]
    got = db.sql("SELECT id FROM recipe ORDER BY img <-> (SELECT img FROM tag WHERE id = "
                 "10003) LIMIT 10")
    assert ids(got) == topk(l2(data["img"], data["timg"][3]), np.ones(N, bool), 10)


def test_exact_fallbacks_match_numpy(data):
    db, q = data["db"], data["q1"]
    d = l2(data["img"], q)
    # a predicate outside the filter language (arithmetic) runs exactly in DuckDB
    got = db.sql("SELECT id FROM recipe WHERE popularity % 3 = 0 ORDER BY img <-> $1 "
                 "LIMIT 20", [q])
    assert ids(got) == topk(d, data["pop"] % 3 == 0, 20)
    # farthest-first is not a nearest-neighbour search: exact too
    got = db.sql("SELECT id FROM recipe ORDER BY img <-> $1 DESC LIMIT 5", [q])
    assert ids(got) == np.argsort(-d, kind="stable")[:5].tolist()
    # cosine distance on an L2 column
    cos = 1 - (data["img"] @ q) / (np.linalg.norm(data["img"], axis=1) * np.linalg.norm(q))
    got = db.sql("SELECT id, img <=> $1 AS c FROM recipe ORDER BY c LIMIT 10", [q])
    assert ids(got) == topk(cos, np.ones(N, bool), 10)
    np.testing.assert_allclose(got.column("c").to_numpy(), np.sort(cos)[:10], rtol=1e-4,
                               atol=1e-6)


def test_explain_names_engines(data):
    db, q = data["db"], data["q1"]
    plan = db.sql("EXPLAIN SELECT category, count(*) FROM (SELECT * FROM recipe WHERE "
                  "popularity < 100 ORDER BY img <-> $1 LIMIT 10) s GROUP BY category", [q])
    rows = plan.to_pylist()
    assert [r["engine"] for r in rows] == ["unidb", "duckdb"]
    assert "topk" in rows[0]["detail"] and "popularity < 100" in rows[0]["detail"]
    assert "GROUP BY" in rows[1]["detail"].upper()
    # a pure vector query never reaches DuckDB, and EXPLAIN says so
    rows = db.sql("EXPLAIN SELECT id FROM recipe ORDER BY img <-> (SELECT img FROM tag "
                  "WHERE id = 10001) LIMIT 5").to_pylist()
    assert [r["engine"] for r in rows] == ["unidb", "unidb"] and "rows_returned=5" in \
        rows[0]["detail"]


def test_partition_index_recall(tmp_path):
    rng = np.random.default_rng(3)
    db = unidb.connect(tmp_path / "db")
    db.sql("CREATE TABLE r (id BIGINT PRIMARY KEY, popularity BIGINT, img VECTOR(32))")
    n = 4000
    m = _vectors_small(rng, n)
    pop = rng.integers(0, 10_001, n)
    db.open_table("r").add({"id": np.arange(n), "popularity": pop, "img": m})
    db.sql("CREATE INDEX ON r USING partition (img)")
    recall = []
    for i in range(10):
        q = m[rng.integers(n)] + 0.1 * rng.standard_normal(32)
        d = l2(m.astype(np.float64), q)
        for p in (10_000, 3000):
            got = db.sql("SELECT id FROM r WHERE popularity <= $2 ORDER BY img <-> $1 LIMIT 20",
                         [q, p])
            want = topk(d, pop <= p, 20)
            recall.append(len(set(ids(got)) & set(want)) / 20)
    assert np.mean(recall) >= 0.95
    db.close()


def _vectors_small(rng, n):
    centers = rng.standard_normal((20, 32))
    return (centers[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, 32))
            ).astype(np.float32)


def test_lateral_topk_join(data):
    db = data["db"]
    got = db.sql("SELECT t.id AS tid, x.id AS rid, x.d FROM tag t, LATERAL (SELECT r.id, "
                 "r.img <-> t.img AS d FROM recipe r WHERE r.popularity < 5000 ORDER BY d "
                 "LIMIT 3) x WHERE t.id < 10010 ORDER BY tid, d")
    a, b = data["img"], data["timg"][:10]
    dist = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
                              - 2 * a @ b.T, 0))
    want = []
    for j in range(10):
        for i in topk(dist[:, j], data["pop"] < 5000, 3):
            want.append((10_000 + j, i))
    assert list(zip(ids(got, "tid"), ids(got, "rid"))) == want
    plan = db.sql("EXPLAIN SELECT t.id, x.id FROM tag t, LATERAL (SELECT r.id FROM recipe r "
                  "ORDER BY r.img <-> t.img LIMIT 3) x").to_pylist()
    assert plan[0]["step"].startswith("similarity join")


def test_range_with_order_limit_and_small_edges(data):
    db, q = data["db"], data["q1"]
    d = l2(data["img"], q)
    r = _radius(d, 60)
    got = db.sql("SELECT id, img <-> $1 AS dist FROM recipe WHERE img <-> $1 < $2 "
                 "ORDER BY dist LIMIT 10", [q, r])
    assert ids(got) == topk(d, d < r, 10)
    got = db.sql("SELECT img <-> $1 FROM recipe WHERE img <-> $1 <= $2 ORDER BY 1", [q, r])
    assert got.column_names == ["_distance"]
    np.testing.assert_allclose(got.column(0).to_numpy(), np.sort(d[d <= r]), rtol=1e-5)
    assert db.sql("SELECT id FROM recipe ORDER BY img <-> $1 LIMIT 0", [q]).num_rows == 0
    got = db.sql("SELECT id FROM recipe ORDER BY img <-> $1 LIMIT 5 OFFSET 5", [q])
    assert ids(got) == topk(d, np.ones(N, bool), 10)[5:]
