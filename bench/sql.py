"""SQL front end: latency of the eight VBase query shapes through `db.sql()`, next to the
Python API doing the same query and next to exact numpy evaluation, in the same run.

    python bench/sql.py [--n 20000] [--tags 1000] [--queries 20] [--repeats 5] [--index]

Schema: recipe(id, popularity 0..10000, description TEXT, img VECTOR(256), txt VECTOR(256)),
tag(id, img VECTOR(256)). Reported per shape: median over repetitions of the mean latency per
query (ms) for SQL, the Python API and numpy brute force; the SQL overhead (SQL - API); recall
of the SQL answer against the exact one. Target: overhead < 1 ms per top-k query.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.configure_threads(1)

import numpy as np  # noqa: E402

import unidb  # noqa: E402

DIM = 256
WORDS = ["salt", "sugar", "basil", "lemon", "garlic", "cumin", "honey", "chili"]
POP = 3000                          # popularity <= POP: ~30% selectivity
WEIGHT = 0.5                        # weight of the second vector in the two-vector shapes


def make_vectors(rng, n, centers):
    return (centers[rng.integers(0, len(centers), n)] + 0.6 * rng.standard_normal((n, DIM))
            ).astype(np.float32)


def build(path: Path, n: int, n_tags: int, index: bool):
    rng = np.random.default_rng(20251122)
    centers = rng.standard_normal((64, DIM))
    db = unidb.connect(path)
    db.sql("CREATE TABLE recipe (id BIGINT PRIMARY KEY, popularity BIGINT NOT NULL, "
           "description TEXT NOT NULL, img VECTOR(256) NOT NULL, txt VECTOR(256) NOT NULL)")
    db.sql("CREATE TABLE tag (id BIGINT PRIMARY KEY, img VECTOR(256) NOT NULL)")
    img, txt = make_vectors(rng, n, centers), make_vectors(rng, n, centers)
    pop = rng.integers(0, 10_001, n)
    desc = np.array([" ".join(rng.choice(WORDS, 3)) for _ in range(n)])
    recipe = db.open_table("recipe")
    for s in range(0, n, 10_000):
        e = min(s + 10_000, n)
        recipe.add({"id": np.arange(s, e), "popularity": pop[s:e], "description": desc[s:e],
                    "img": img[s:e], "txt": txt[s:e]})
    timg = make_vectors(rng, n_tags, centers)
    db.open_table("tag").add({"id": np.arange(n_tags), "img": timg})
    recipe.flush()
    if index:
        db.sql("CREATE INDEX ON recipe USING partition (img)")
        db.sql("CREATE INDEX ON recipe USING partition (txt)")
    return db, {"img": img, "txt": txt, "pop": pop, "desc": desc, "timg": timg}


def l2(m: np.ndarray, q: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", m, m) - 2 * (m @ q.astype(np.float32)) + float(q @ q)
    return np.sqrt(np.maximum(sq, 0))


def exact_topk(score, mask, k):
    idx = np.flatnonzero(mask) if mask is not None else np.arange(len(score))
    part = idx[np.argpartition(score[idx], min(k, len(idx) - 1))[:k]]
    return part[np.argsort(score[part])]


def recall(got: list, want) -> float:
    want = list(want)
    return len(set(got) & set(int(x) for x in want)) / max(len(want), 1)


def shapes(db, data, queries, radius, join_radius):
    """(name, sql fn, api fn, exact fn) per shape; each fn(i) runs query i, returns ids."""
    t = db.open_table("recipe")
    q1s, q2s = queries
    like = "description NOT LIKE '%garlic%'"
    nolike = np.array(["garlic" not in s for s in data["desc"]])
    popmask = data["pop"] <= POP
    img, txt = data["img"], data["txt"]

    def sql(text, *extra):
        return lambda i: db.sql(text, [q1s[i], q2s[i], *extra]).column(0).to_pylist()

    def api_top(where=None):
        def run(i):
            sb = t.search(vector=q1s[i], column="img").limit(50).select(["id"])
            if where:
                sb = sb.where(where)
            return sb.to_arrow().column("id").to_pylist()
        return run

    def api_multi(where=None):
        def run(i):
            sb = t.search(vectors={"img": q1s[i], "txt": q2s[i]},
                          weights={"img": 1.0, "txt": WEIGHT}).limit(50).select(["id"])
            if where:
                sb = sb.where(where)
            return sb.to_arrow().column("id").to_pylist()
        return run

    def ex_top(mask=None):
        return lambda i: exact_topk(l2(img, q1s[i]), mask, 50)

    def ex_multi(mask=None):
        return lambda i: exact_topk(l2(img, q1s[i]) + WEIGHT * l2(txt, q2s[i]), mask, 50)

    multi = f"ORDER BY (img <-> $1) + {WEIGHT} * (txt <-> $2) LIMIT 50"
    out = [
        ("1 top-50", sql("SELECT id FROM recipe ORDER BY img <-> $1 LIMIT 50"),
         api_top(), ex_top()),
        ("2 top-50 + popularity", sql("SELECT id FROM recipe WHERE popularity <= $3 "
                                      "ORDER BY img <-> $1 LIMIT 50", POP),
         api_top(f"popularity <= {POP}"), ex_top(popmask)),
        ("3 top-50 + NOT LIKE", sql(f"SELECT id FROM recipe WHERE {like} "
                                    f"ORDER BY img <-> $1 LIMIT 50"),
         api_top(like), ex_top(nolike)),
        ("4 two-vector top-50", sql(f"SELECT id FROM recipe {multi}"), api_multi(),
         ex_multi()),
        ("5 two-vector + popularity", sql(f"SELECT id FROM recipe WHERE popularity <= $3 "
                                          f"{multi}", POP),
         api_multi(f"popularity <= {POP}"), ex_multi(popmask)),
        ("6 two-vector + NOT LIKE", sql(f"SELECT id FROM recipe WHERE {like} {multi}"),
         api_multi(like), ex_multi(nolike)),
        ("7 range", sql("SELECT id FROM recipe WHERE img <-> $1 < $3", radius),
         lambda i: t.search(vector=q1s[i], column="img").distance_range(max=radius)
         .select(["id"]).to_arrow().column("id").to_pylist(),
         lambda i: np.flatnonzero(l2(img, q1s[i]) < radius)),
    ]
    return out


def join_shape(db, data, join_radius):
    """Shape 8 runs once per repetition (it is one query over both tables)."""
    from unidb.query.planner import similarity_join
    r, tg = db.open_table("recipe"), db.open_table("tag")
    text = "SELECT r.id AS rid, t.id AS tid FROM recipe r JOIN tag t ON r.img <-> t.img < $1"

    def sql():
        got = db.sql(text, [join_radius])
        return set(zip(got.column("rid").to_pylist(), got.column("tid").to_pylist()))

    def api():
        ls, rs = r.data_source(), tg.data_source()
        pairs = set()
        for a, b, _ in similarity_join(ls, rs, ("img", "img"), max_distance=join_radius):
            ka = r._state().take(np.asarray(a, np.int64), ["id"]).column(0).to_pylist()
            kb = tg._state().take(np.asarray(b, np.int64), ["id"]).column(0).to_pylist()
            pairs.update(zip(ka, kb))
        return pairs

    def exact():
        a, b = data["img"], data["timg"]
        pairs = set()
        bsq = np.einsum("ij,ij->i", b, b)
        for s in range(0, len(a), 4096):
            blk = a[s:s + 4096]
            d = np.sqrt(np.maximum(np.einsum("ij,ij->i", blk, blk)[:, None] + bsq[None, :]
                                   - 2 * blk @ b.T, 0))
            ii, jj = np.nonzero(d < join_radius)
            pairs.update(zip((ii + s).tolist(), jj.tolist()))
        return pairs

    return sql, api, exact


def interleaved(sql_fn, api_fn, exact_fn, repeats: int):
    """Time the three alternately, `repeats` rounds (a shared machine drifts: pairing the SQL
    and API runs of one round keeps the drift out of their difference). Returns the three
    Timings and the median over rounds of (SQL - API)."""
    for fn in (sql_fn, api_fn, exact_fn):           # warm-up: caches, parse cache, numba
        fn()
    rounds = [[_common.time_repeated(fn, 1) for fn in (sql_fn, api_fn, exact_fn)]
              for _ in range(repeats)]
    out = []
    for j in range(3):
        times = [r[j].median for r in rounds]
        out.append(_common.Timing(float(np.median(times)), times, rounds[-1][j].result))
    over = float(np.median([r[0].median - r[1].median for r in rounds]))
    return out[0], out[1], out[2], over


PROBE_ROWS = 1000
PROBE_QUERIES = 200


def overhead_probe(path: Path, repeats: int) -> list[dict]:
    """What the SQL layer adds per query, on a table small enough that the search itself is
    cheap and machine noise does not swamp the difference."""
    rng = np.random.default_rng(5)
    db = unidb.connect(path)
    db.sql("CREATE TABLE p (id BIGINT PRIMARY KEY, popularity BIGINT, img VECTOR(256), "
           "txt VECTOR(256))")
    t = db.open_table("p")
    t.add({"id": np.arange(PROBE_ROWS), "popularity": rng.integers(0, 10_001, PROBE_ROWS),
           "img": rng.standard_normal((PROBE_ROWS, DIM)),
           "txt": rng.standard_normal((PROBE_ROWS, DIM))})
    qs = rng.standard_normal((PROBE_QUERIES, DIM))
    cases = [
        ("top-10", lambda q: db.sql("SELECT id FROM p ORDER BY img <-> $1 LIMIT 10", [q]),
         lambda q: t.search(vector=q, column="img").limit(10).select(["id"]).to_arrow()),
        ("top-10 + filter",
         lambda q: db.sql("SELECT id FROM p WHERE popularity <= $2 ORDER BY img <-> $1 "
                          "LIMIT 10", [q, 3000]),
         lambda q: t.search(vector=q, column="img").where("popularity <= 3000").limit(10)
         .select(["id"]).to_arrow()),
        ("two-vector top-10",
         lambda q: db.sql("SELECT id FROM p ORDER BY img <-> $1 + 0.5 * (txt <-> $1) "
                          "LIMIT 10", [q]),
         lambda q: t.search(vectors={"img": q, "txt": q}, weights={"img": 1.0, "txt": 0.5})
         .limit(10).select(["id"]).to_arrow()),
        ("range", lambda q: db.sql("SELECT id FROM p WHERE img <-> $1 <= 21", [q]),
         lambda q: t.search(vector=q, column="img").distance_range(max=21.0).select(["id"])
         .to_arrow()),
    ]
    rows = []
    for name, sql_fn, api_fn in cases:
        def batch(fn):
            return lambda: [fn(q) for q in qs]
        ts, ta, _, over = interleaved(batch(sql_fn), batch(api_fn), lambda: None,
                                      repeats * 2)
        rows.append({"shape": name, "sql_ms": ts.median / PROBE_QUERIES * 1e3,
                     "api_ms": ta.median / PROBE_QUERIES * 1e3,
                     "overhead_ms": over / PROBE_QUERIES * 1e3})
    db.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--index", action="store_true", help="partition indexes on img and txt")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db, data = build(Path(tmp) / "db", args.n, args.tags, args.index)
        rng = np.random.default_rng(1)
        picks = rng.integers(0, args.n, args.queries)
        noise = 0.3 * rng.standard_normal((args.queries, DIM))
        q1s = data["img"][picks].astype(np.float64) + noise
        q2s = data["txt"][picks].astype(np.float64) + noise[::-1]
        d0 = l2(data["img"], q1s[0])
        radius = float(np.sort(d0)[200])                 # ~200 rows within the radius
        sample = data["img"][:2000]
        dj = np.sqrt(np.maximum(np.einsum("ij,ij->i", sample, sample)[:, None]
                                + np.einsum("ij,ij->i", data["timg"], data["timg"])[None, :]
                                - 2 * sample @ data["timg"].T, 0))
        join_radius = float(np.quantile(dj, 1e-4))
        rows = []
        for name, sql_fn, api_fn, ex_fn in shapes(db, data, (q1s, q2s), radius, join_radius):
            nq = args.queries

            def batch(fn):
                return lambda: [fn(i) for i in range(nq)]
            ts, ta, te, over = interleaved(batch(sql_fn), batch(api_fn), batch(ex_fn),
                                           args.repeats)
            rec = float(np.mean([recall(g, w) if len(w) else 1.0
                                 for g, w in zip(ts.result, te.result)]))
            same_as_api = all(list(a) == list(b) for a, b in zip(ts.result, ta.result))
            rows.append({"shape": name, "sql_ms": ts.median / nq * 1e3,
                         "api_ms": ta.median / nq * 1e3, "exact_ms": te.median / nq * 1e3,
                         "overhead_ms": over / nq * 1e3,
                         "recall": rec, "same_as_api": same_as_api})
        sql_j, api_j, ex_j = join_shape(db, data, join_radius)
        ts, ta, te, over = interleaved(sql_j, api_j, ex_j, args.repeats)
        want = te.result
        rows.append({"shape": f"8 join ({len(want)} pairs)", "sql_ms": ts.median * 1e3,
                     "api_ms": ta.median * 1e3, "exact_ms": te.median * 1e3,
                     "overhead_ms": over * 1e3,
                     "recall": len(ts.result & want) / max(len(want), 1),
                     "same_as_api": ts.result == ta.result})
        # What parsing costs when the statement is not in the cache (first use of a text).
        from unidb.sql import parser
        text = "SELECT id FROM recipe WHERE popularity <= $2 ORDER BY img <-> $1 LIMIT 50"

        def cold():
            parser._parse_cached.cache_clear()
            parser.parse(text)
        tc = _common.time_repeated(cold, args.repeats * 4, warmup=1)
        db.close()
        probe = overhead_probe(Path(tmp) / "probe", args.repeats)
    cols = ["shape", "sql_ms", "api_ms", "exact_ms", "overhead_ms", "recall", "same_as_api"]
    _common.print_table(rows, cols, title=f"SQL vs Python API vs exact numpy: n={args.n}, "
                        f"tags={args.tags}, {args.queries} queries, median of {args.repeats}, "
                        f"index={'partition' if args.index else 'none (exact flat)'}")
    print()
    _common.print_table(probe, ["shape", "sql_ms", "api_ms", "overhead_ms"],
                        title=f"SQL overhead probe: {PROBE_ROWS} rows x {DIM}-d, top-10, "
                        f"{PROBE_QUERIES} queries interleaved, median of {args.repeats * 2}")
    print(f"\nparse of an uncached statement: {tc.median * 1e3:.3f} ms (cached: a dict lookup)")
    path = _common.write_results("sql", {"config": vars(args), "rows": rows, "probe": probe,
                                         "parse_uncached_ms": tc.median * 1e3})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
