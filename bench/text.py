"""Full-text and hybrid search on SciFact: unidb TextIndex next to bm25s, and exact vs
truncated hybrid fusion.

Run:  NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/text.py
Prints tables, writes bench/results/text.json and the tables into docs/text-search.md
(between the bench markers). One query at a time, single thread, medians of REPS runs.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

for _v in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unidb.datasets import load_scifact  # noqa: E402
from unidb.evaluate import ndcg_at_k  # noqa: E402
from unidb.index.sparse import (ScoresSource, IndexSource, TextIndex,  # noqa: E402
                                exact_fused_topk, fuse_linear, fuse_rrf)
import unidb.index.sparse.inverted as inv  # noqa: E402

REPS = 5
K = 10
TRUNC = 100          # depth of each list in "two searches then fuse"
DOC_MARK_START = "<!-- bench:text:start -->"
DOC_MARK_END = "<!-- bench:text:end -->"


def traced_memory(build) -> dict:
    """Peak and retained Python/numpy heap (tracemalloc) of one build, in MiB."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    build()
    gc.collect()
    now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"build_peak_mib": (peak - base) / 2**20, "retained_mib": (now - base) / 2**20}


def median_time(fn, reps=REPS) -> float:
    ts = []
    for _ in range(reps):
        gc.collect()
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def run_of(sf, qi, rows_per_query):
    return {sf.queries[i]["_id"]: [sf.doc_ids[r] for r in rows]
            for i, rows in zip(qi, rows_per_query)}


def main() -> dict:
    sf = load_scifact()
    qi = sf.test_query_indices()
    texts = [d["title"] + " " + d["text"] for d in sf.corpus]
    queries = [sf.queries[i]["text"] for i in qi]
    rows = np.arange(len(texts))
    out: dict = {"dataset": "scifact", "docs": len(texts), "queries": len(queries),
                 "threads": {v: os.environ.get(v) for v in ("NUMBA_NUM_THREADS",
                                                            "OPENBLAS_NUM_THREADS")},
                 "machine": platform.platform(), "python": platform.python_version(),
                 "reps": REPS}

    # ------------------------------------------------------------------ build
    TextIndex().add(rows[:10], texts[:10])          # warm numba caches outside the timings
    holder = {}

    def build_unidb():
        idx = TextIndex()
        idx.add(rows, texts)
        holder["idx"] = idx

    t_build = median_time(build_unidb)
    mem_unidb = traced_memory(build_unidb)
    idx = holder["idx"]

    import bm25s
    import Stemmer
    stemmer = Stemmer.Stemmer("english")

    def build_bm25s(backend="numpy"):
        tok = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        r = bm25s.BM25(k1=1.2, b=0.75, method="lucene", backend=backend)
        r.index(tok, show_progress=False)
        holder[f"bm25s-{backend}"] = r

    t_bm25s = median_time(build_bm25s)
    mem_bm25s = traced_memory(build_bm25s)
    build_bm25s("numba")

    # ------------------------------------------------------------------ one query at a time
    def bm25s_one(retr, q):
        tok = bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False,
                             return_ids=False)
        return retr.retrieve(tok, k=K, show_progress=False, n_threads=0)[0][0]

    systems = {"unidb": lambda q: idx.search(q, K)[0]}
    for backend in ("numpy", "numba"):
        systems[f"bm25s-{backend}"] = (lambda r: lambda q: bm25s_one(r, q))(
            holder[f"bm25s-{backend}"])
    # Interleaved query by query (REPS passes after a warm-up pass) so load changes on the
    # shared machine hit every system alike; per pass the total time of each system.
    totals = {name: [] for name in systems}
    runs = {name: [] for name in systems}
    for rep in range(REPS + 1):
        acc = dict.fromkeys(systems, 0.0)
        for q in queries:
            for name, fn in systems.items():
                t0 = time.perf_counter()
                r = fn(q)
                acc[name] += time.perf_counter() - t0
                if rep == 0:
                    runs[name].append(r)
        if rep:
            for name in systems:
                totals[name].append(acc[name])
    qps = {name: len(queries) / statistics.median(t) for name, t in totals.items()}
    ndcg = {name: ndcg_at_k(run_of(sf, qi, runs[name]), sf.test_qrels, K) for name in systems}
    ratio = {name: statistics.median(b / u for u, b in zip(totals["unidb"], totals[name]))
             for name in systems if name != "unidb"}

    def unidb_all():
        return [idx.search(q, K)[0] for q in queries]

    # planner ablation: force each top-k algorithm
    planners = {}
    for name, force in (("maxscore", True), ("taat", False)):
        old = inv.use_maxscore
        inv.use_maxscore = lambda n_docs, n_postings, force=force: force
        try:
            unidb_all()
            planners[name] = len(queries) / median_time(unidb_all)
        finally:
            inv.use_maxscore = old
    st = idx.stats()
    out["text"] = {
        "settings": {"analyzer": idx.analyzer.to_dict(), "k1": idx.k1, "b": idx.b,
                     "bm25s": "bm25s.tokenize(stopwords='en', PyStemmer english), "
                              "BM25(k1=1.2, b=0.75, method='lucene', backend=numpy|numba), "
                              "retrieve(n_threads=0: in the calling thread)"},
        "unidb": {"build_s": t_build, "qps": qps["unidb"], "ndcg@10": ndcg["unidb"],
                  "index_bytes": st["bytes"], "postings": st["postings"], **mem_unidb,
                  "qps_forced": planners},
        "bm25s": {"build_s": t_bm25s, "qps": qps["bm25s-numpy"], "ndcg@10": ndcg["bm25s-numpy"],
                  **mem_bm25s},
        "bm25s_numba": {"qps": qps["bm25s-numba"], "ndcg@10": ndcg["bm25s-numba"]},
        "qps_ratio": ratio["bm25s-numpy"],
        "qps_ratio_numba": ratio["bm25s-numba"],
    }

    # ------------------------------------------------------------------ hybrid
    X = sf.corpus_emb
    qemb = sf.query_emb[qi]

    def dense_full(j):
        return ScoresSource(rows, (X @ qemb[j]).astype(np.float64))

    def exact_one(method, j, q):
        return exact_fused_topk([IndexSource(idx, q), dense_full(j)], method, limit=K)[0]

    def two_one(method, j, q):
        fuse = fuse_rrf if method == "rrf" else fuse_linear
        t = idx.search(q, TRUNC)
        s = X @ qemb[j]
        top = np.argpartition(-s, TRUNC)[:TRUNC]
        return fuse([t, (top, s[top].astype(np.float64))], limit=K)[0]

    def dense_only():
        res = []
        for j in range(len(queries)):
            s = X @ qemb[j]
            top = np.argpartition(-s, K)[:K]
            res.append(top[np.lexsort((top, -s[top]))])
        return res

    # The two modes run alternately query by query (REPS passes), so load changes on this
    # shared machine hit both alike; we report median per-query latency and the median of
    # the per-query ratios.
    hybrid = {}
    for method in ("rrf", "linear"):
        times = {"exact": [], "two_searches": []}
        runs = {"exact": [], "two_searches": []}
        for rep in range(REPS + 1):           # pass 0 warms up
            for j, q in enumerate(queries):
                for mode, fn in (("exact", exact_one), ("two_searches", two_one)):
                    t0 = time.perf_counter()
                    r = fn(method, j, q)
                    dt = time.perf_counter() - t0
                    if rep:
                        times[mode].append(dt)
                    if rep == 1:
                        runs[mode].append(r)
        ratio = float(np.median(np.array(times["exact"]) / np.array(times["two_searches"])))
        for mode in times:
            hybrid[f"{method}/{mode}"] = {
                "ms_per_query": 1e3 * float(np.median(times[mode])),
                "ndcg@10": ndcg_at_k(run_of(sf, qi, runs[mode]), sf.test_qrels, K)}
        hybrid[f"{method}/exact"]["median_ratio_to_two_searches"] = ratio
    depths = []
    for j, q in enumerate(queries):
        info: dict = {}
        exact_fused_topk([IndexSource(idx, q), dense_full(j)], "rrf", limit=K, info=info)
        depths.append(info["depths"])
    out["hybrid"] = hybrid
    out["hybrid_rrf_mean_depths"] = np.mean(depths, axis=0).tolist()
    out["dense_ndcg@10"] = ndcg_at_k(run_of(sf, qi, dense_only()), sf.test_qrels, K)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def tables(r: dict) -> str:
    t, u, b = r["text"], r["text"]["unidb"], r["text"]["bm25s"]
    lines = [
        f"SciFact, {r['docs']} docs, {r['queries']} test queries, one query at a time, single "
        f"thread, median of {r['reps']} runs ({r['machine']}).",
        "",
        "| system | build s | QPS | nDCG@10 | retained MiB | build peak MiB |",
        "|---|---|---|---|---|---|",
        f"| unidb TextIndex | {u['build_s']:.2f} | {u['qps']:.0f} | {u['ndcg@10']:.4f} | "
        f"{u['retained_mib']:.1f} | {u['build_peak_mib']:.1f} |",
        f"| bm25s (numpy backend) | {b['build_s']:.2f} | {b['qps']:.0f} | {b['ndcg@10']:.4f} | "
        f"{b['retained_mib']:.1f} | {b['build_peak_mib']:.1f} |",
        f"| bm25s (numba backend) | (same) | {t['bm25s_numba']['qps']:.0f} | "
        f"{t['bm25s_numba']['ndcg@10']:.4f} | | |",
        "",
        f"QPS ratio unidb / bm25s (median over passes, queries interleaved): "
        f"**{t['qps_ratio']:.2f}x** vs the numpy backend, **{t['qps_ratio_numba']:.2f}x** vs "
        "the numba backend. Forced top-k algorithm: MaxScore "
        f"{u['qps_forced']['maxscore']:.0f} QPS, term-at-a-time {u['qps_forced']['taat']:.0f} "
        "QPS (the planner picks per query and segment). Memory: tracemalloc of one build "
        f"(retained = held by the index; unidb stats() reports {u['index_bytes'] / 2**20:.1f} "
        "MiB of arrays after the queries: postings are held as inverted lists and as a forward "
        "copy, plus the BM25 cache of the queried terms).",
        "",
        "| hybrid (BM25 + dense MiniLM, exact cosine) | median ms / query | nDCG@10 |",
        "|---|---|---|",
    ]
    for key, v in r["hybrid"].items():
        method, mode = key.split("/")
        label = ("exact fused top-10 (full lists)" if mode == "exact"
                 else f"two searches (top-{TRUNC} each) then fuse")
        ratio = (f" (median per-query ratio to two searches: "
                 f"{v['median_ratio_to_two_searches']:.2f}x)" if mode == "exact" else "")
        lines.append(f"| {method}: {label}{ratio} | {v['ms_per_query']:.3f} | "
                     f"{v['ndcg@10']:.4f} |")
    lines += ["",
              f"Dense alone nDCG@10 {r['dense_ndcg@10']:.4f}. Exact RRF pulled on average "
              f"{r['hybrid_rrf_mean_depths'][0]:.0f} BM25 rows and "
              f"{r['hybrid_rrf_mean_depths'][1]:.0f} dense rows per query. Both hybrid modes "
              "include the dense scoring (X @ q) and the query analysis."]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = ROOT / "docs" / "text-search.md"
    body = doc.read_text() if doc.exists() else f"{DOC_MARK_START}\n{DOC_MARK_END}\n"
    if DOC_MARK_START not in body:
        body += f"\n{DOC_MARK_START}\n{DOC_MARK_END}\n"
    head, rest = body.split(DOC_MARK_START, 1)
    _, tail = rest.split(DOC_MARK_END, 1)
    doc.write_text(f"{head}{DOC_MARK_START}\n{text}\n{DOC_MARK_END}{tail}")


if __name__ == "__main__":
    res = main()
    txt = tables(res)
    print(txt)
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (ROOT / "bench" / "results" / f"text-{stamp}.json").write_text(json.dumps(res, indent=1))
    write_docs(txt)
