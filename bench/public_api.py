"""Per-call cost of the public search API against a baseline commit, alternating, same run.

100k synth rows (128-d) with a price column, a Text column, a partition index on the vectors
and a sorted index on price. Each measure is the median over 3 passes of the mean time per
call (microseconds), in a fresh process per run; the table gives medians over runs and the
ratio current / baseline. Measures what users call: `t.search(...)....to_list()`, `t.get`.

    .venv/bin/python bench/public_api.py [--baseline 1eef230] [--repeats 3] [--n 100000]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import _common

KEYS = ("vector_top10_us", "filtered_top10_us", "text_top10_us", "hybrid_rrf_top10_us",
        "get10_us")


def child(n: int) -> None:
    import numpy as np
    import unidb
    from unidb import datasets
    x = np.ascontiguousarray(datasets.synth(n))
    q = np.ascontiguousarray(datasets.synth(1000, "queries"))
    db = unidb.connect(Path(tempfile.mkdtemp(prefix="unidb-api-")) / "db.unidb")
    t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
                              "title": unidb.Text(), "emb": unidb.Vector(x.shape[1])})
    rng = np.random.default_rng(0)
    words = np.array(["red", "blue", "kettle", "lamp", "chair", "green", "aspirin", "heart"])
    t.add({"id": np.arange(n), "price": rng.uniform(0, 100, n),
           "title": [" ".join(rng.choice(words, 5)) for _ in range(n)], "emb": x})
    t.create_index("emb", kind="partition")
    t.create_index("price")
    for i in range(50):                                   # compile kernels, warm caches
        t.search(q[i]).where("price < 20").limit(10).to_list()

    def per_call(fn, calls):
        passes = []
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(calls):
                fn(q[i])
            passes.append((time.perf_counter() - t0) / calls * 1e6)
        return statistics.median(passes)

    out = {
        "vector_top10_us": per_call(lambda v: t.search(v).limit(10).to_list(), 300),
        "filtered_top10_us": per_call(
            lambda v: t.search(v).where("price < 20").limit(10).to_list(), 300),
        "text_top10_us": per_call(lambda v: t.search(text="kettle lamp").limit(10).to_list(),
                                  200),
        "hybrid_rrf_top10_us": per_call(
            lambda v: t.search(v, text="kettle").fuse("rrf").limit(10).to_list(), 100),
        "get10_us": per_call(lambda v: t.get(list(range(10))), 300),
    }
    db.close()
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--baseline", default="1eef230")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=1, metavar="N", help=argparse.SUPPRESS)
    args = ap.parse_args()
    _common.configure_threads(1)
    if args.child:
        child(int(args.child[0]))
        return
    runs = _common.run_against_baseline(Path(__file__).resolve(),
                                        lambda rep: [str(args.n if rep >= 0 else 5_000)],
                                        args.baseline, args.repeats)
    rows = _common.ab_table(runs, KEYS)
    _common.print_table(rows, ["measure", "baseline", "current", "ratio"],
                        title=f"public API per call, {args.n:,} rows, medians of "
                              f"{args.repeats}, baseline {args.baseline}")
    path = _common.write_results("public_api", {
        "n": args.n, "baseline": args.baseline, "runs": runs, "table": rows,
        "machine": _common.machine_info(), "threads": _common.thread_env()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
