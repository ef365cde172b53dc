"""`make demo`: load real data into an embedded unidb database and run real queries.

Loads SIFT-small (or a generated set of the same shape when ../shared/data is absent) and,
when present, the SciFact corpus with its MiniLM embeddings; then runs exact top-10, filtered
top-10 and distance-range queries (and the index/text/hybrid searches this build has), checking
each answer against brute force or the published ground truth, with timings.

    python -m unidb.demo [--path ./demo.unidb] [--keep]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import unidb
from unidb.datasets import generate_like_siftsmall, load_scifact, load_siftsmall, shared_data_dir
from unidb.evaluate import ndcg_at_k, recall_at_k

BATCH = 1000
K = 10


def _load(table, columns: dict, n: int, desc: str) -> float:
    t0 = time.perf_counter()
    with tqdm(total=n, desc=desc, unit="rows", leave=True) as bar:
        for s in range(0, n, BATCH):
            table.add({k: v[s:s + BATCH] for k, v in columns.items()})
            bar.update(min(BATCH, n - s))
    return time.perf_counter() - t0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def sift_part(db, data_root) -> None:
    try:
        ds = load_siftsmall(data_root)
        source = "SIFT-small (../shared/data/siftsmall)"
    except FileNotFoundError:
        ds = generate_like_siftsmall()
        source = "generated SIFT-small stand-in (../shared/data not found)"
    n = len(ds.base)
    rng = np.random.default_rng(0)
    price = np.round(rng.uniform(1, 500, n), 2)
    category = rng.choice(["tools", "garden", "kitchen", "toys"], n)
    print(f"\n== {source}: {n:,} vectors x {ds.base.shape[1]}, {len(ds.queries)} queries")
    t = db.create_table("sift", {"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
                                 "category": unidb.String(), "emb": unidb.Vector(128)})
    secs = _load(t, {"id": np.arange(n), "price": price, "category": category.tolist(),
                     "emb": ds.base}, n, "loading sift")
    print(f"loaded {len(t):,} rows in {secs:.2f} s ({n / secs:,.0f} rows/s, durable: sync)")

    # 1. exact top-10, all queries, recall against the official ground truth
    t0 = time.perf_counter()
    found = [[r["id"] for r in rows]
             for rows in t.search(ds.queries).limit(K).select(["id"]).to_list()]
    secs = time.perf_counter() - t0
    print(f"exact top-10 x {len(ds.queries)} queries: recall@10 = "
          f"{recall_at_k(found, ds.gt, K):.4f} vs ground truth, {_ms(secs / len(ds.queries))} "
          f"per query")
    q = ds.queries[0]
    t0 = time.perf_counter()
    hits = t.search(q).limit(3).select(["id", "price", "category"]).to_list()
    print(f"  query 0 -> {[(h['id'], round(h['_distance'], 1)) for h in hits]} "
          f"({_ms(time.perf_counter() - t0)})")

    # 2. filtered top-10, checked against brute force over the matching rows
    where = "price < 100 AND category IN ('tools', 'toys')"
    mask = (price < 100) & np.isin(category, ["tools", "toys"])
    d_all = np.sqrt(((ds.base[None, :, :].astype(np.float64) - ds.queries[:20, None, :]) ** 2
                     ).sum(-1))
    t0 = time.perf_counter()
    res = t.search(ds.queries[:20]).where(where).limit(K).select(["id", "price"]).to_list()
    secs = time.perf_counter() - t0
    truth = [np.flatnonzero(mask)[np.argsort(d_all[i, mask], kind="stable")[:K]]
             for i in range(20)]
    rec = recall_at_k([[r["id"] for r in rows] for rows in res], np.stack(truth), K)
    ok = all(r["price"] < 100 for rows in res for r in rows)
    print(f"filtered top-10 ({where}; {mask.mean():.1%} of rows): recall@10 = {rec:.4f}, "
          f"filter respected: {ok}, {_ms(secs / 20)} per query")

    # 3. distance range: every row within r of the query
    r = float(np.sort(d_all[0])[25])
    t0 = time.perf_counter()
    rows = t.search(ds.queries[0]).distance_range(max=r).select(["id"]).to_list()
    secs = time.perf_counter() - t0
    exact = set(np.flatnonzero(d_all[0] <= r).tolist())
    print(f"distance_range(max={r:.1f}): {len(rows)} rows, exactly the brute-force set: "
          f"{exact == {x['id'] for x in rows}} ({_ms(secs)})")
    print(f"count(where={where!r}) = {t.count(where=where)}")

    # 4. the partitioned (SPANN + LIRE) index: approximate, kept fresh in place
    t0 = time.perf_counter()
    t.create_index("emb", kind="partition")
    build = time.perf_counter() - t0
    t.search(ds.queries[0]).limit(K).to_arrow()     # first call compiles the numba kernels
    t0 = time.perf_counter()
    found = [[r["id"] for r in t.search(q).limit(K).select(["id"]).to_list()]
             for q in ds.queries]
    secs = time.perf_counter() - t0
    st = t.index_stats("emb")
    print(f"partition index: built in {build:.2f} s ({st['postings']} postings, median length "
          f"{st['posting_len_p50']:.0f}); recall@10 = {recall_at_k(found, ds.gt, K):.4f}, "
          f"{_ms(secs / len(ds.queries))} per query")
    ex = t.search(ds.queries[1]).where("price < 20").limit(K).explain()
    print(f"  filtered via the planner: plan={ex.plan}, {ex.rows_matched} rows match, "
          f"returned {ex.rows_returned}")


def scifact_part(db, data_root) -> None:
    try:
        sf = load_scifact(data_root)
    except FileNotFoundError as e:
        print(f"\n== SciFact skipped: {e}")
        return
    n = len(sf.corpus)
    print(f"\n== SciFact: {n:,} abstracts with MiniLM embeddings (384-d, cosine)")
    t = db.create_table("scifact", {"doc_id": unidb.String(primary_key=True),
                                    "title": unidb.String(), "text": unidb.Text(),
                                    "emb": unidb.Vector(384, metric="cosine")})
    secs = _load(t, {"doc_id": sf.doc_ids, "title": [d["title"] for d in sf.corpus],
                     # BEIR indexes title + text; so does the BM25 column here
                     "text": [d["title"] + " " + d["text"] for d in sf.corpus],
                     "emb": sf.corpus_emb}, n,
                 "loading scifact")
    print(f"loaded {len(t):,} documents in {secs:.2f} s")
    test = sf.test_query_indices()
    t0 = time.perf_counter()
    res = t.search(sf.query_emb[test]).limit(K).select(["doc_id"]).to_list()
    secs = time.perf_counter() - t0
    run = {sf.queries[i]["_id"]: [r["doc_id"] for r in rows] for i, rows in zip(test, res)}
    print(f"dense exact search, {len(test)} test queries: nDCG@10 = "
          f"{ndcg_at_k(run, sf.test_qrels, 10):.4f} (published for MiniLM: ~0.645), "
          f"{_ms(secs / len(test))} per query")
    for label, make in (("BM25 (text index)", lambda i: t.search(text=sf.queries[i]["text"])),
                        ("hybrid (dense + BM25, exact RRF)",
                         lambda i: t.search(sf.query_emb[i], text=sf.queries[i]["text"]))):
        make(test[0]).limit(K).to_arrow()            # warm-up: compiles the numba kernels
        t0 = time.perf_counter()
        run = {sf.queries[i]["_id"]: [r["doc_id"] for r in
                                      make(i).limit(K).select(["doc_id"]).to_list()]
               for i in test}
        secs = time.perf_counter() - t0
        print(f"{label}: nDCG@10 = {ndcg_at_k(run, sf.test_qrels, 10):.4f}, "
              f"{_ms(secs / len(test))} per query")
    qi = test[0]
    top = t.search(sf.query_emb[qi]).limit(3).select(["title"]).to_list()
    print(f"  claim: {sf.queries[qi]['text'][:90]!r}")
    for r in top:
        print(f"    {r['_distance']:.3f}  {r['title'][:90]}")


def main() -> None:
    ap = argparse.ArgumentParser(description="unidb demo on real data")
    ap.add_argument("--path", default="demo.unidb", help="database folder (recreated)")
    ap.add_argument("--data", default=None, help="shared data folder (default ../shared/data)")
    ap.add_argument("--keep", action="store_true", help="keep the database folder afterwards")
    args = ap.parse_args()
    path = Path(args.path)
    if path.exists():
        if not (path / "unidb.json").exists():
            raise SystemExit(f"{path} exists and is not a unidb database; pick another --path")
        shutil.rmtree(path)
    data_root = args.data or shared_data_dir()
    t_start = time.perf_counter()
    print(f"unidb {unidb.__version__}: embedded database at {path.resolve()}")
    with unidb.connect(path) as db:
        sift_part(db, data_root)
        scifact_part(db, data_root)
        print(f"\ntables: {db.table_names()}")
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)
    print(f"demo finished in {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
