"""ANN benchmark: unidb's partition index vs faiss IndexIVFFlat and hnswlib, same run, 1 thread.

For each dataset: build time, index memory (RSS growth during build), then a sweep of the
search knob (partitions probed / ef) measuring recall@10 and QPS one query at a time and
batched (all queries in one call). QPS at recall 0.90 / 0.95 / 0.99 is read at the first sweep
point that reaches it (no interpolation). Prints tables, writes bench/results/ann-*.json and
docs/img/ann-recall-qps.png.

    .venv/bin/python bench/ann.py                         # siftsmall, mnist, synth 200k
    .venv/bin/python bench/ann.py --datasets synth --synth-n 1000000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.configure_threads(1)

import numpy as np

from unidb import datasets
from unidb.evaluate import recall_at_k
from unidb.index.partition import PartitionIndex

K = 10
TARGETS = (0.90, 0.95, 0.99)
NPROBES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96)
EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384)
HNSW_M, HNSW_EFC = 16, 200          # hnswlib's usual settings
IMG = Path(__file__).resolve().parents[1] / "docs" / "img" / "ann-recall-qps.png"


def load(name: str, synth_n: int):
    if name == "siftsmall":
        d = datasets.load_siftsmall()
        return d.base, d.queries, d.gt[:, :K]
    if name == "mnist":
        d = datasets.load_mnist()
        return d.base, d.queries, d.gt[:, :K]
    if name == "synth":
        x = np.ascontiguousarray(datasets.synth(synth_n))
        q = np.ascontiguousarray(datasets.synth(datasets.SYNTH_SIZES["queries"], "queries"))
        gt, _ = datasets.synth_ground_truth(synth_n, K)
        return x, q, gt[:, :K]
    raise ValueError(f"unknown dataset {name!r}")


def rss() -> float:
    return _common.current_rss_mb() or 0.0


def build_unidb(x):
    idx = PartitionIndex.build(np.arange(len(x)), x, "l2")
    st = idx.stats()
    info = {k: st[k] for k in ("postings", "replicas_ratio", "posting_len_p50", "posting_len_p99",
                               "posting_len_max")}
    points = [(npr, (lambda npr: (lambda v: idx.search(v, K, nprobe=npr)[0],
                                  lambda qs: idx.search(qs, K, nprobe=npr)[0]))(npr))
              for npr in NPROBES]
    points.append(("default", (lambda v: idx.search(v, K)[0], lambda qs: idx.search(qs, K)[0])))
    return idx, points, {"index": info}


def build_faiss(x):
    import faiss
    faiss.omp_set_num_threads(1)
    nlist = int(4 * np.sqrt(len(x)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(x.shape[1]), x.shape[1], nlist)
    ivf.train(x)
    ivf.add(x)

    def knob(npr):
        def one(v):
            ivf.nprobe = npr
            return ivf.search(v[None, :], K)[1][0]

        def batch(qs):
            ivf.nprobe = npr
            return ivf.search(qs, K)[1]
        return one, batch
    return ivf, [(npr, knob(npr)) for npr in NPROBES if npr <= nlist], {"nlist": nlist}


def build_hnsw(x):
    import hnswlib
    h = hnswlib.Index(space="l2", dim=x.shape[1])
    h.init_index(max_elements=len(x), M=HNSW_M, ef_construction=HNSW_EFC, random_seed=1)
    h.set_num_threads(1)
    h.add_items(x, np.arange(len(x)), num_threads=1)

    def knob(ef):
        def one(v):
            h.set_ef(max(ef, K))
            return h.knn_query(v[None, :], K, num_threads=1)[0][0]

        def batch(qs):
            h.set_ef(max(ef, K))
            return h.knn_query(qs, K, num_threads=1)[0].astype(np.int64)
        return one, batch
    return h, [(ef, knob(ef)) for ef in EFS], {"M": HNSW_M, "ef_construction": HNSW_EFC}


def run_all(systems, x, q, gt, repeats):
    """Build each system, then time every sweep point of every system in interleaved rounds
    (round r measures all systems' point i back to back), so machine noise hits all alike."""
    builders = {"unidb-partition": build_unidb, "faiss-ivfflat": build_faiss, "hnswlib": build_hnsw}
    built, res = {}, {}
    for system in systems:
        r0 = rss()
        t0 = time.perf_counter()
        obj, points, info = builders[system](x)
        build = time.perf_counter() - t0
        built[system] = (obj, points)
        res[system] = {"build_s": build, "mem_mb": rss() - r0, **info,
                       "times_one": [[] for _ in points], "times_batch": [[] for _ in points]}
        print(f"  {system}: built in {build:.1f}s", flush=True)
    for system, (_, points) in built.items():      # warm-up (numba JIT, caches) + recall
        res[system]["recall"] = [recall_at_k(np.asarray(b(q)), gt, K) for _, (o, b) in points]
    longest = max(len(p) for _, p in built.values())
    for _ in range(repeats):
        for i in range(longest):
            for system, (_, points) in built.items():
                if i >= len(points):
                    continue
                one, batch = points[i][1]
                t0 = time.perf_counter()
                for j in range(len(q)):
                    one(q[j])
                t1 = time.perf_counter()
                batch(q)
                t2 = time.perf_counter()
                res[system]["times_one"][i].append(t1 - t0)
                res[system]["times_batch"][i].append(t2 - t1)
    import statistics
    for system, (_, points) in built.items():
        r = res[system]
        pts = [{"knob": knob, "recall": r["recall"][i],
                "qps_one": _common.qps(len(q), statistics.median(r["times_one"][i])),
                "qps_batch": _common.qps(len(q), statistics.median(r["times_batch"][i]))}
               for i, (knob, _) in enumerate(points)]
        r["points"] = [p for p in pts if p["knob"] != "default"]
        if any(p["knob"] == "default" for p in pts):
            r["default"] = next(p for p in pts if p["knob"] == "default")
        del r["times_one"], r["times_batch"], r["recall"]
    return res


def summarise(name, n, results):
    rows = []
    for system, r in results.items():
        row = {"dataset": name, "n": n, "system": system, "build_s": r["build_s"],
               "mem_mb": r["mem_mb"]}
        for mode in ("one", "batch"):
            curve = [(p["recall"], p[f"qps_{mode}"]) for p in r["points"]]
            for t in TARGETS:
                row[f"qps_{mode}@{t:.2f}"] = _common.qps_at_recall(curve, t)
        rows.append(row)
    base = next((r for r in rows if r["system"] == "faiss-ivfflat"), None)
    for row in rows:
        for mode in ("one", "batch"):
            ours, theirs = row.get(f"qps_{mode}@0.95"), base and base.get(f"qps_{mode}@0.95")
            row[f"{mode}@0.95 / faiss"] = ours / theirs if ours and theirs else None
    return rows


def plot(all_results, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(all_results)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    styles = {"unidb-partition": "C0", "faiss-ivfflat": "C1", "hnswlib": "C2"}
    for ax, name in zip(axes[0], names):
        for system, r in all_results[name]["systems"].items():
            rec = [p["recall"] for p in r["points"]]
            for mode, ls in (("one", "-"), ("batch", "--")):
                ax.plot(rec, [p[f"qps_{mode}"] for p in r["points"]], ls, marker="o", ms=3,
                        color=styles.get(system), label=f"{system} ({mode})")
        ax.set_xlim(0.85, 1.001)
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries / s (1 thread)")
        ax.set_title(f"{name.split()[0]} (n={all_results[name]['n']:,})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="siftsmall,mnist,synth")
    ap.add_argument("--synth-n", type=int, default=200_000)
    ap.add_argument("--from-json", type=Path, nargs="+", default=None,
                    help="only redraw the PNG from results files of earlier runs (merged)")
    ap.add_argument("--repeats", type=int, default=_common.DEFAULT_REPEATS)
    ap.add_argument("--systems", default="unidb-partition,faiss-ivfflat,hnswlib")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--img", type=Path, default=IMG, help="where the recall-vs-QPS PNG goes")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        import json
        merged = {}
        for f in args.from_json:
            for name, r in json.loads(f.read_text())["results"].items():
                merged[name if name not in merged else f"{name} {r['n']:,}"] = r
        plot(merged, args.img)
        print(f"wrote {args.img}")
        return
    all_results, rows, sweep_rows = {}, [], []
    for name in args.datasets.split(","):
        x, q, gt = load(name, args.synth_n)
        x = np.ascontiguousarray(x, dtype=np.float32)
        q = np.ascontiguousarray(q, dtype=np.float32)
        print(f"{name}: n={len(x):,} nq={len(q):,}", flush=True)
        res = run_all(args.systems.split(","), x, q, gt, args.repeats)
        for system, r in res.items():
            for p in r["points"] + ([r["default"]] if "default" in r else []):
                sweep_rows.append({"dataset": name, "system": system, **p})
        all_results[name] = {"n": len(x), "nq": len(q), "systems": res}
        rows += summarise(name, len(x), res)
    cols = ["dataset", "n", "system", "build_s", "mem_mb"] + \
        [f"qps_{m}@{t:.2f}" for m in ("one", "batch") for t in TARGETS] + \
        ["one@0.95 / faiss", "batch@0.95 / faiss"]
    _common.print_table(sweep_rows, ["dataset", "system", "knob", "recall", "qps_one", "qps_batch"],
                        title="sweep")
    _common.print_table(rows, cols, title="ANN summary (recall@10, 1 thread, first sweep point)")
    out = _common.write_results("ann", {"k": K, "summary": rows, "results": all_results,
                                        "peak_rss_mb": _common.peak_rss_mb()})
    print(f"wrote {out}")
    if not args.no_plot:
        plot(all_results, args.img)
        print(f"wrote {args.img}")


if __name__ == "__main__":
    main()
