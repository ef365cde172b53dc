"""Compressed first-pass codes: the partition index without codes vs with SQ8 (quantization="sq8").

Both indexes are built from the same rows with the same seed, so they have the same postings
and probe the same partitions; sq8 returns the same results (tests/test_quantization.py), so
recall is equal by construction and what differs is speed and bytes. Per dataset and probe
setting ("default" = eps2/max_partitions defaults, then fixed nprobe): recall@10, one-query
QPS (median of 3 interleaved repetitions), batched QPS, the fraction of scanned entries the
sq8 pass re-ranked from full vectors, and the bytes per entry the first pass reads.

    .venv/bin/python bench/quantization.py                        # siftsmall, mnist, synth 200k
    .venv/bin/python bench/quantization.py --datasets synth --synth-n 1000000
    .venv/bin/python bench/quantization.py --ab e3e679e --datasets siftsmall,synth
        # the default path (no codes) of this checkout vs a baseline commit, fresh processes
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.configure_threads(1)

from ann import K, load     # noqa: E402  (ann sets the thread pools before numpy loads)

import numpy as np

from unidb.evaluate import recall_at_k
from unidb.index.partition import PartitionIndex, PartitionOptions
from unidb.kernels import partition as KP

PROBES = ("default", 2, 4, 8, 16, 32)
REPEATS = 3


def rerank_fraction(idx: PartitionIndex, q: np.ndarray, nprobe) -> float:
    """Entries re-ranked exactly / stored entries scanned by the sq8 pass, over all queries."""
    view = idx.view()
    e, m = idx._probe_params(None if nprobe == "default" else nprobe, None, None)
    posts, qidx, _ = view.routing.navigate(q, False, e, m)
    o = np.argsort(qidx, kind="stable")
    qptr = np.zeros(len(q) + 1, dtype=np.int64)
    np.cumsum(np.bincount(qidx, minlength=len(q)), out=qptr[1:])
    _, _, scored, reranked = view.postings.search_codes(
        np.ascontiguousarray(q, np.float32), qptr, np.ascontiguousarray(posts[o]), KP.MODE_L2,
        view.vmap, K, 2)
    return float(reranked.sum() / max(scored.sum(), 1))


def first_pass_bytes(dim: int, quantized: bool) -> int:
    """Bytes the scan reads per stored entry: vector (float32 or uint8 codes + float32 error
    bound), float32 squared norm (plain only), int64 row id, uint8 version."""
    return (dim + 4 if quantized else 4 * dim + 4) + 8 + 1


def run(name: str, x, q, gt) -> list[dict]:
    built = {}
    for label, opts in (("none", PartitionOptions()),
                        ("sq8", PartitionOptions(quantization="sq8"))):
        t0 = time.perf_counter()
        built[label] = PartitionIndex.build(np.arange(len(x)), x, "l2", opts)
        built[label].build_s = time.perf_counter() - t0
    rows = []
    for npr in PROBES:
        kw = {} if npr == "default" else {"nprobe": npr}
        times = {label: {"one": [], "batch": []} for label in built}
        ids = {}
        for label, idx in built.items():               # warm up (numba dispatch, caches)
            ids[label] = idx.search(q, K, **kw)[0]
            for v in q[:20]:
                idx.search(v, K, **kw)
        for _ in range(REPEATS):                        # interleaved: drift hits both alike
            for label, idx in built.items():
                t0 = time.perf_counter()
                for v in q:
                    idx.search(v, K, **kw)
                t1 = time.perf_counter()
                idx.search(q, K, **kw)
                t2 = time.perf_counter()
                times[label]["one"].append(t1 - t0)
                times[label]["batch"].append(t2 - t1)
        frac = rerank_fraction(built["sq8"], q, npr)
        for label, idx in built.items():
            st = idx.stats()
            rows.append({
                "dataset": name, "quant": label, "nprobe": npr,
                "recall@10": recall_at_k(ids[label], gt, K),
                "same_ids": bool(np.array_equal(ids[label], ids["none"])),
                "qps_one": _common.qps(len(q), statistics.median(times[label]["one"])),
                "qps_batch": _common.qps(len(q), statistics.median(times[label]["batch"])),
                "reranked": frac if label == "sq8" else None,
                "pass_bytes": first_pass_bytes(x.shape[1], label == "sq8"),
                "store_mb": st["bytes"] / 2 ** 20,
                "build_s": idx.build_s,
            })
    return rows


AB_KEYS = ("one_default_s", "batch_default_s", "one_nprobe8_s", "batch_nprobe8_s")


def ab_child(name: str, synth_n: int) -> dict:
    """Seconds per pass over the queries of an index without codes (whatever tree PYTHONPATH
    names): one query at a time and batched, at the default probe and at nprobe 8."""
    x, q, _ = load(name, synth_n)
    idx = PartitionIndex.build(np.arange(len(x)), x, "l2")
    out = {}
    for key, kw in (("default", {}), ("nprobe8", {"nprobe": 8})):
        idx.search(q, K, **kw)
        for v in q[:50]:
            idx.search(v, K, **kw)
        one = _common.time_repeated(lambda: [idx.search(v, K, **kw) for v in q], REPEATS)
        batch = _common.time_repeated(lambda: idx.search(q, K, **kw), REPEATS)
        out[f"one_{key}_s"] = one.median
        out[f"batch_{key}_s"] = batch.median
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="siftsmall,mnist,synth")
    ap.add_argument("--synth-n", type=int, default=200_000)
    ap.add_argument("--ab", metavar="BASELINE", help="A/B of the default path vs this commit")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(ab_child(args.child[0], args.synth_n)))
        return
    if args.ab:
        out = {}
        for name in args.datasets.split(","):
            runs = _common.run_against_baseline(
                Path(__file__).resolve(),
                lambda rep, name=name: [name if rep >= 0 else "siftsmall", "--synth-n",
                                        str(args.synth_n)], args.ab, args.repeats)
            out[name] = {"runs": runs, "table": _common.ab_table(runs, AB_KEYS)}
            _common.print_table(out[name]["table"], ["measure", "baseline", "current", "ratio"],
                                title=f"{name}: default path (no codes), seconds per pass, "
                                      f"baseline {args.ab}, medians of {args.repeats} runs")
        path = _common.write_results("quantization-ab", {"ab": out, "args": vars(args)})
        print(f"wrote {path}")
        return
    rows = []
    for name in args.datasets.split(","):
        x, q, gt = load(name, args.synth_n)
        label = f"synth{args.synth_n // 1000}k" if name == "synth" else name
        rows += run(label, x, q, gt)
    cols = ["dataset", "quant", "nprobe", "recall@10", "same_ids", "qps_one", "qps_batch",
            "reranked", "pass_bytes", "store_mb", "build_s"]
    _common.print_table(rows, cols, title="partition index: no codes vs SQ8 first pass")
    path = _common.write_results("quantization", {"rows": rows, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
