"""Hybrid query execution (VBase): filtered top-k, range, multi-vector and join benchmarks.

    .venv/bin/python bench/filtered.py [--n 200000] [--nq 100] [--mnist-nq 300] [--plot]

Filtered top-10 over a selectivity sweep on the synthetic mixture (uniform, positively and
negatively correlated filters) and on MNIST with the same-label filter, next to the baselines
in the same run: post-filter with a fixed k' (100 / 1,000 / 10,000), k-doubling retries and
pre-filter brute force. Then a range-radius sweep, multi-vector weights (adaptive vs
round-robin) and a similarity join against the nested loop. Prints tables, writes JSON to
bench/results/ and (with --plot) docs/img/filtered.png. Single-threaded (BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.configure_threads(1)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from unidb import datasets  # noqa: E402
from unidb.evaluate import exact_knn, recall_at_k  # noqa: E402
from unidb.index.flat.scan import distances, exact_distances  # noqa: E402
from unidb.index.partition import PartitionIndex  # noqa: E402
from unidb.options import DEFAULT  # noqa: E402
from unidb.query.array_source import ArraySource  # noqa: E402
from unidb.query.filter import col  # noqa: E402
from unidb.query.join import nested_loop_join  # noqa: E402
from unidb.query.planner import (execute_multivector, execute_range, execute_topk,  # noqa: E402
                                 similarity_join)

K = 10
SELECTIVITIES = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.5, 0.9, 1.0]
U_RANGE = 1_000_000                  # the uniform attribute is an int in [0, U_RANGE)
POST_KPRIMES = (100, 1_000, 10_000)
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ baselines

def post_filter(index, q, mask, kprime):
    ids, _ = index.search(q, kprime)
    ids = ids[0][ids[0] >= 0]
    return ids[mask[ids]][:K], kprime


def k_doubling(index, q, mask, n):
    kp = K
    while True:
        ids, _ = index.search(q, kp)
        ids = ids[0][ids[0] >= 0]
        hit = ids[mask[ids]]
        if len(hit) >= K or kp >= n:
            return hit[:K], kp
        kp *= 2


def prefilter_bf(X, q, mask):
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return rows, 0
    d = distances(X[rows], q, "l2") if len(rows) < 0.3 * len(X) else distances(X, q, "l2")[rows]
    kk = min(K, len(rows))
    part = np.argpartition(d, kk - 1)[:kk]
    return rows[part[np.argsort(d[part])]], len(rows)


def exact_filtered_gt(X, q, mask):
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return rows
    ids, _ = exact_knn(X[rows], q[None].astype(np.float32), min(K, len(rows)), "l2")
    return rows[ids[0]]


# ------------------------------------------------------------------------------ filters

def correlated_labels(q, means, weights, sel, nearest: bool):
    """Mixture components nearest (or farthest) from q until their weight reaches sel."""
    d = ((means - q) ** 2).sum(1)
    order = np.argsort(d if nearest else -d)
    cum = np.cumsum(weights[order])
    return order[:int(np.searchsorted(cum, sel)) + 1]


def make_filter(kind, sel, q, params):
    if kind == "uniform":
        return col("u") < int(round(sel * U_RANGE))
    labs = correlated_labels(q, params.means, params.weights, sel, kind == "positive")
    return col("label").isin([int(x) for x in labs])


# ------------------------------------------------------------------------------ harness

def _one(name, src, index, X, q, expr, n):
    """Run one method on one query: (ids, candidates visited, plan or None)."""
    if name.startswith("unidb"):
        force = {"unidb": None, "unidb-index": "index", "unidb-exact": "flat"}[name]
        ids, _, ex = execute_topk(src, "v", q, K, expr, {"force_plan": force})
        return ids, ex.candidates_visited, ex.plan
    mask = src.row_filter(expr).mask          # every baseline pays for the filter too
    if name.startswith("post-"):
        return (*post_filter(index, q, mask, int(name.split("-")[1])), None)
    if name == "k-doubling":
        return (*k_doubling(index, q, mask, n), None)
    return (*prefilter_bf(X, q, mask), None)


def run_methods(src, index, X, Q, exprs, gts, methods, n):
    """Per method: recall@10, under-filled, latency p50/p99 (ms), candidates visited.
    Methods are interleaved per query so machine noise hits them alike."""
    acc = {m: {"lat": [], "found": [], "visited": [], "under": 0, "plans": {}} for m in methods}
    for q, expr, gt in zip(Q, exprs, gts):
        for name in methods:
            t0 = time.perf_counter()
            ids, vis, plan = _one(name, src, index, X, q, expr, n)
            a = acc[name]
            a["lat"].append((time.perf_counter() - t0) * 1e3)
            a["found"].append(ids)
            a["visited"].append(vis)
            a["under"] += len(ids) < len(gt)
            if plan:
                a["plans"][plan] = a["plans"].get(plan, 0) + 1
    out = {}
    for name, a in acc.items():
        # recall over the rows that exist: a filter with m < 10 matches asks for m rows
        rec = float(np.mean([len(set(np.asarray(f)[:K].tolist()) & set(np.asarray(g)[:K].tolist()))
                             / max(len(np.asarray(g)[:K]), 1) for f, g in zip(a["found"], gts)]))
        out[name] = {"recall": rec, "underfilled": a["under"],
                     "p50_ms": float(np.percentile(a["lat"], 50)),
                     "p99_ms": float(np.percentile(a["lat"], 99)),
                     "visited": float(np.mean(a["visited"])), "plans": a["plans"]}
    return out


def cached_index(name, ids, X, metric="l2"):
    folder = Path(datasets._cache_dir(None)) / "query-bench" / name
    t0 = time.perf_counter()
    if (folder / "done").exists():
        try:
            idx, _ = PartitionIndex.load(folder)
            return idx, {"loaded": True, "seconds": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001 - a stale cache is rebuilt
            print(f"  (rebuilding {name}: cached copy unusable: {e})")
    idx = PartitionIndex.build(ids, X, metric)
    build_s = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    try:
        idx.save(folder, covered=len(ids))
        (folder / "done").write_text("ok")
    except Exception as e:  # noqa: BLE001 - caching is an optimisation only
        print(f"  (index not cached: {e})")
    return idx, {"loaded": False, "seconds": build_s}


# ------------------------------------------------------------------------------ sections

def filtered_synth(n, nq, methods, rows_out):
    X = np.ascontiguousarray(datasets.synth(n))
    labels = datasets.synth_labels("base", n)
    Q = np.asarray(datasets.synth(nq, "queries"), dtype=np.float64)
    sp = datasets.synth_params()
    u = np.random.default_rng([datasets.SYNTH_SEED, 7]).integers(0, U_RANGE, n)
    src = ArraySource({"v": X}, scalars=pa.table({"u": u, "label": labels}))
    index, build = cached_index(f"synth-{n}", np.arange(n), X)
    src.set_vector_index("v", index)
    print(f"synth n={n:,}: partition index {'loaded' if build['loaded'] else 'built'} "
          f"in {build['seconds']:.1f} s")
    results = []
    for kind in ("uniform", "positive", "negative"):
        for sel in SELECTIVITIES:
            if sel == 1.0 and kind != "uniform":
                continue                     # every filter is the whole table at 100%
            exprs = [make_filter(kind, sel, q, sp) for q in Q]
            masks = [src.row_filter(e).mask for e in exprs]
            gts = [exact_filtered_gt(X, q, m) for q, m in zip(Q, masks)]
            actual = float(np.mean([m.mean() for m in masks]))
            t0 = time.perf_counter()
            res = run_methods(src, index, X, Q, exprs, gts, methods, n)
            for m, r in res.items():
                row = {"data": f"synth{n // 1000}k", "filter": kind, "sel": sel,
                       "actual_sel": actual, "method": m, **r}
                results.append(row)
                rows_out.append(row)
            u_ = res.get("unidb", {})
            print(f"  {kind:8s} sel={sel:<6} actual={actual:.4f}  unidb recall={u_.get('recall', 0):.3f} "
                  f"p50={u_.get('p50_ms', 0):.2f}ms plans={u_.get('plans')}  ({time.perf_counter() - t0:.1f}s)",
                  flush=True)
    return results, {"build": build, "n": n, "nq": nq}, (src, index, X, Q)


THRESHOLD_SELS = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2]


def threshold_sweep(ctx, nq):
    """Exact-over-matches vs index streaming at selectivities around the crossover (uniform
    filter): sets PlannerOptions.exact_max_cells (docs/query-execution.md)."""
    src, index, X, Q = ctx
    Q = Q[:nq]
    rows = []
    for sel in THRESHOLD_SELS:
        exprs = [col("u") < int(round(sel * U_RANGE)) for _ in Q]
        gts = [exact_filtered_gt(X, q, src.row_filter(e).mask) for q, e in zip(Q, exprs)]
        res = run_methods(src, index, X, Q, exprs, gts, ["unidb-index", "unidb-exact"], len(X))
        rows.append({"sel": sel, "index_recall": res["unidb-index"]["recall"],
                     "index_p50_ms": res["unidb-index"]["p50_ms"],
                     "exact_p50_ms": res["unidb-exact"]["p50_ms"],
                     "index_visited": res["unidb-index"]["visited"],
                     "exact_rows": res["unidb-exact"]["visited"]})
    return rows


def filtered_mnist(nq, methods, rows_out):
    try:
        ds = datasets.load_mnist()
    except Exception as e:  # noqa: BLE001
        print(f"MNIST skipped: {e}")
        return [], {"skipped": str(e)}
    X = ds.base
    src = ArraySource({"v": X}, scalars=pa.table({"label": ds.base_labels}))
    index, build = cached_index("mnist", np.arange(len(X)), X)
    src.set_vector_index("v", index)
    Q = ds.queries[:nq].astype(np.float64)
    exprs = [col("label") == int(lab) for lab in ds.query_labels[:nq]]
    gts = [g[:K] for g in ds.gt_same_label[:nq]]
    res = run_methods(src, index, X, Q, exprs, gts, methods, len(X))
    out = []
    for m, r in res.items():
        row = {"data": "mnist", "filter": "same-label", "sel": 0.1,
               "actual_sel": float(np.mean([(ds.base_labels == lab).mean()
                                            for lab in ds.query_labels[:nq]])),
               "method": m, **r}
        out.append(row)
        rows_out.append(row)
    return out, {"build": build, "nq": nq}


def range_sweep(src, X, Q, nq):
    """Radii at the 10th / 100th / 1000th neighbour distance (median over queries)."""
    Q = Q[:nq]
    D = np.stack([exact_distances(X, q, "l2") for q in Q])          # (nq, n) exact
    srt = np.sort(D, axis=1)
    rows = []
    for rank in (10, 100, 1000):
        r = float(np.median(srt[:, rank - 1]))
        for filt in (None, "uniform-10%"):
            expr = None if filt is None else col("u") < U_RANGE // 10
            mask = src.row_filter(expr).mask
            prec, rec, lat, vis, sizes = [], [], [], [], []
            for q, d in zip(Q, D):
                truth = set(np.flatnonzero((d <= r) & mask).tolist())
                t0 = time.perf_counter()
                ids, dd, ex = execute_range(src, "v", q, max_distance=r, expr=expr)
                lat.append((time.perf_counter() - t0) * 1e3)
                got = set(ids.tolist())
                prec.append(len(got & truth) / len(got) if got else 1.0)
                if truth:
                    rec.append(len(got & truth) / len(truth))
                vis.append(ex.candidates_visited)
                sizes.append(len(truth))
            rows.append({"radius_rank": rank, "radius": r, "filter": filt or "none",
                         "mean_true_rows": float(np.mean(sizes)), "precision": float(np.mean(prec)),
                         "recall": float(np.mean(rec)) if rec else 1.0,
                         "p50_ms": float(np.percentile(lat, 50)), "visited": float(np.mean(vis)),
                         "bf_ms": None})
    # brute-force baseline: one GEMV over all rows + threshold
    for row in rows:
        t0 = time.perf_counter()
        for q in Q:
            d = distances(X, q, "l2")
            np.flatnonzero(d <= row["radius"])
        row["bf_ms"] = (time.perf_counter() - t0) * 1e3 / len(Q)
    return rows


def multivector_bench(nq):
    """MNIST pixels (784-d) + a 2x2-pooled thumbnail view (196-d), both partition-indexed."""
    try:
        ds = datasets.load_mnist()
    except Exception as e:  # noqa: BLE001
        return [{"skipped": str(e)}]
    def pool(x):
        return x.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(x), 196).astype(np.float32)
    A, B = ds.base, pool(ds.base)
    QA, QB = ds.queries[:nq].astype(np.float64), pool(ds.queries[:nq]).astype(np.float64)
    src = ArraySource({"img": A, "thumb": B})
    src.set_vector_index("img", cached_index("mnist", np.arange(len(A)), A)[0])
    src.set_vector_index("thumb", cached_index("mnist-thumb", np.arange(len(B)), B)[0])
    rows = []
    for wa, wb in ((1.0, 1.0), (1.0, 10.0)):
        truth = []
        t0 = time.perf_counter()
        for qa, qb in zip(QA, QB):
            s = wa * exact_distances(A, qa, "l2") + wb * exact_distances(B, qb, "l2")
            truth.append(np.argsort(s)[:K])
        bf_ms = (time.perf_counter() - t0) * 1e3 / nq
        for streams, schedule in ((s, c) for s in ("partition", "flat")
                                  for c in ("adaptive", "round-robin")):
            found, lat, pulled, per = [], [], [], {}
            params = {"schedule": schedule}
            if streams == "flat":
                params.update(force_plan="flat", batch_size=16)
            for qa, qb in zip(QA, QB):
                t0 = time.perf_counter()
                ids, _, ex = execute_multivector(src, {"img": qa, "thumb": qb},
                                                 {"img": wa, "thumb": wb}, K, params=params)
                lat.append((time.perf_counter() - t0) * 1e3)
                found.append(ids)
                pulled.append(ex.candidates_visited)
                for c, v in ex.details["pulled_per_stream"].items():
                    per[c] = per.get(c, 0) + v / nq
            rows.append({"weights": f"{wa:g}:{wb:g}", "streams": streams, "schedule": schedule,
                         "recall": recall_at_k(found, truth, K), "pulled": float(np.mean(pulled)),
                         "pulled_img": per.get("img"), "pulled_thumb": per.get("thumb"),
                         "p50_ms": float(np.percentile(lat, 50)), "bf_ms": bf_ms})
    return rows


def join_bench(src, X, Q, n_left):
    """Left = synth queries, right = the synth base (partition-indexed)."""
    left = ArraySource({"v": np.asarray(Q[:n_left], dtype=np.float32)})
    right = src
    D = np.stack([exact_distances(X, q, "l2") for q in Q[:n_left]])
    r = float(np.median(np.sort(D, axis=1)[:, 9]))
    rows = []
    LQ = np.asarray(Q[:n_left], dtype=np.float32)
    for mode, kw in (("range", {"max_distance": r}), ("top-10", {"k": K})):
        nl = nested_loop_join(left, right, ("v", "v"), **kw)     # exact reference (float64)
        want = set(zip(nl[0].tolist(), nl[1].tolist()))
        t0 = time.perf_counter()                                  # timed baseline: numpy
        for q in LQ:                                              # nested loop, one GEMV per row
            d = distances(X, q, "l2")
            if "k" in kw:
                np.argpartition(d, K)[:K]
            else:
                np.flatnonzero(d <= r)
        nl_s = time.perf_counter() - t0
        for label, params in (("index", {"force_plan": "index"}), ("blocked-exact", {"force_plan": "flat"})):
            t0 = time.perf_counter()
            got = set()
            for lids, rids, _ in similarity_join(left, right, ("v", "v"), params=params, **kw):
                got |= set(zip(lids.tolist(), rids.tolist()))
            s = time.perf_counter() - t0
            rows.append({"join": mode, "plan": label, "left_rows": n_left, "pairs": len(got),
                         "recall": len(got & want) / max(len(want), 1),
                         "precision": len(got & want) / max(len(got), 1),
                         "seconds": s, "nested_loop_s": nl_s, "speedup": nl_s / s})
    return rows


# ------------------------------------------------------------------------------ output

def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = [k for k in ("uniform", "positive", "negative") if any(r["filter"] == k for r in rows)]
    fig, axes = plt.subplots(2, len(kinds), figsize=(5 * len(kinds), 7), squeeze=False)
    methods = ["unidb", "post-100", "post-1000", "post-10000", "k-doubling", "prefilter-bf"]
    for j, kind in enumerate(kinds):
        for m in methods:
            pts = sorted((r["sel"], r["p50_ms"], r["recall"]) for r in rows
                         if r["filter"] == kind and r["method"] == m)
            if not pts:
                continue
            s, lat, rec = zip(*pts)
            style = dict(marker="o", lw=2.5) if m == "unidb" else dict(marker=".", lw=1)
            axes[0, j].plot(s, lat, label=m, **style)
            axes[1, j].plot(s, rec, label=m, **style)
        axes[0, j].set(xscale="log", yscale="log", title=f"{rows[0]['data']}: {kind} filter",
                       ylabel="p50 latency (ms)")
        axes[1, j].set(xscale="log", ylim=(0, 1.02), xlabel="selectivity", ylabel="recall@10")
        axes[1, j].axhline(0.95, color="grey", ls=":")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--nq", type=int, default=100)
    ap.add_argument("--mnist-nq", type=int, default=300)
    ap.add_argument("--sections", default="synth,threshold,mnist,range,multivector,join")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--sels", default=None, help="comma-separated subset of the selectivities")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if args.sels:
        SELECTIVITIES[:] = [float(x) for x in args.sels.split(",")]
    methods = ["unidb", "unidb-index", "unidb-exact", *[f"post-{k}" for k in POST_KPRIMES],
               "k-doubling", "prefilter-bf"]
    rows, payload = [], {"k": K, "selectivities": SELECTIVITIES, "methods": methods,
                         "planner": DEFAULT.to_dict()["planner"]}
    cols = ["data", "filter", "sel", "actual_sel", "method", "recall", "underfilled", "p50_ms",
            "p99_ms", "visited"]
    synth_ctx = None
    if sections & {"synth", "range", "join", "threshold"}:
        srows, payload["synth"], synth_ctx = filtered_synth(args.n, args.nq, methods, rows) \
            if "synth" in sections else ([], {}, None)
        if synth_ctx is None:
            X = np.ascontiguousarray(datasets.synth(args.n))
            u = np.random.default_rng([datasets.SYNTH_SEED, 7]).integers(0, U_RANGE, args.n)
            src = ArraySource({"v": X}, scalars=pa.table({"u": u}))
            src.set_vector_index("v", cached_index(f"synth-{args.n}", np.arange(args.n), X)[0])
            synth_ctx = (src, None, X, np.asarray(datasets.synth(args.nq, "queries"), np.float64))
        if srows:
            _common.print_table(srows, cols, title=f"Filtered top-{K}, synth {args.n:,}")
    if "threshold" in sections:
        src, _, X, Q = synth_ctx
        payload["threshold"] = threshold_sweep((src, src.vector_index("v"), X, Q), args.nq)
        _common.print_table(payload["threshold"], ["sel", "index_recall", "index_p50_ms",
                                                   "exact_p50_ms", "index_visited", "exact_rows"],
                            title="Plan crossover: index stream vs exact over matching rows (uniform)")
    if "mnist" in sections:
        mrows, payload["mnist"] = filtered_mnist(args.mnist_nq, methods, rows)
        if mrows:
            _common.print_table(mrows, cols, title="Filtered top-10, MNIST same-label")
    payload["filtered"] = rows
    if "range" in sections:
        src, _, X, Q = synth_ctx
        payload["range"] = range_sweep(src, X, Q, min(args.nq, 50))
        _common.print_table(payload["range"], ["radius_rank", "radius", "filter", "mean_true_rows",
                                               "precision", "recall", "p50_ms", "bf_ms", "visited"],
                            title="Distance range sweep (synth)")
    if "multivector" in sections:
        payload["multivector"] = multivector_bench(min(args.mnist_nq, 200))
        _common.print_table(payload["multivector"], ["weights", "streams", "schedule", "recall", "pulled",
                                                     "pulled_img", "pulled_thumb", "p50_ms", "bf_ms"],
                            title="Multi-vector top-10 (MNIST pixels + thumbnails)")
    if "join" in sections:
        src, _, X, Q = synth_ctx
        payload["join"] = join_bench(src, X, Q, min(args.nq, 200))
        _common.print_table(payload["join"], ["join", "plan", "left_rows", "pairs", "recall",
                                              "precision", "seconds", "nested_loop_s", "speedup"],
                            title="Similarity join vs nested loop (synth)")
    path = _common.write_results("filtered", payload)
    print(f"results: {path}")
    if args.plot and any(r["data"].startswith("synth") for r in rows):
        plot([r for r in rows if r["data"].startswith("synth")], ROOT / "docs" / "img" / "filtered.png")
        print("plot: docs/img/filtered.png")


if __name__ == "__main__":
    main()
