"""Ingest and exact-search benchmark on synth1m (BENCHMARKS.md), unidb next to plain numpy.

Measures, in one run: ingest rows/s in `sync` durability with batches of 10,000 (in a child
process, so its peak RSS is the ingest's own), bytes on disk per row, reopen time, and exact
top-10 QPS one query at a time and batched — for unidb and for numpy brute force over the same
vectors held in one in-memory array. Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/ingest_exact.py [--n 1000000] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

BATCH = 10_000
K = 10
SINGLE_QUERIES = 200
REPEATS = 3


def ingest_child(db_path: str, n: int) -> None:
    """Runs in a fresh process: ingest n rows, report timings and peak RSS as JSON."""
    import numpy as np
    import unidb
    from unidb.datasets import synth

    base = synth(n, "base")
    rss0 = _common.current_rss_mb()
    db = unidb.connect(db_path)
    t = db.create_table("synth", {"id": unidb.Int64(primary_key=True),
                                  "cluster": unidb.Int64(), "emb": unidb.Vector(128)})
    labels = np.arange(n) % 1000
    t0 = time.perf_counter()
    for s in range(0, n, BATCH):
        e = min(s + BATCH, n)
        t.add({"id": np.arange(s, e), "cluster": labels[s:e], "emb": np.asarray(base[s:e])})
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    db.close()
    close_s = time.perf_counter() - t0
    print(json.dumps({"ingest_s": ingest_s, "close_s": close_s, "rss_before_mb": rss0,
                      "peak_rss_mb": _common.peak_rss_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("DB", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    _common.configure_threads(args.threads)
    if args.child:
        ingest_child(args.child[0], int(args.child[1]))
        return

    import numpy as np
    import unidb
    from unidb.datasets import synth

    n = args.n
    base = synth(n, "base")
    queries = np.ascontiguousarray(synth(1000, "queries"))
    data_mb = n * 128 * 4 / 2**20
    work = Path(tempfile.mkdtemp(prefix="unidb-bench-"))
    db_path = work / "bench.unidb"
    try:
        # --- ingest (child process) ----------------------------------------------------
        out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                              "--child", str(db_path), str(n)], check=True,
                             capture_output=True, text=True)
        ing = json.loads(out.stdout.strip().splitlines()[-1])
        disk = sum(p.stat().st_size for p in db_path.rglob("*") if p.is_file())

        # --- reopen ----------------------------------------------------------------------
        reopen, reopen_key = [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            db = unidb.connect(db_path)
            t = db.open_table("synth")
            assert len(t) == n
            reopen.append(time.perf_counter() - t0)
            assert t.get([n - 1]).num_rows == 1              # builds the key map
            reopen_key.append(time.perf_counter() - t0)
            db.close()
        db = unidb.connect(db_path)
        t = db.open_table("synth")

        # --- exact search: unidb vs numpy on the same vectors ------------------------------
        x = np.ascontiguousarray(base)                       # the baseline's in-memory array
        sqn = np.einsum("ij,ij->i", x, x)

        def numpy_one(q):
            d = sqn - 2.0 * (x @ q)
            idx = np.argpartition(d, K)[:K]
            return idx[np.argsort(d[idx])]

        def numpy_batch(qs):
            out = []
            for s in range(0, len(qs), 100):
                d = sqn[None, :] - 2.0 * (qs[s:s + 100] @ x.T)
                idx = np.argpartition(d, K, axis=1)[:, :K]
                out.append(np.take_along_axis(idx, np.argsort(
                    np.take_along_axis(d, idx, 1), 1), 1))
            return np.concatenate(out)

        singles = queries[:SINGLE_QUERIES]
        for q in singles[:5]:                               # warm caches (norms, page cache)
            numpy_one(q)
            t.search(q).limit(K).select(["id"]).to_arrow()
        tn1 = _common.time_repeated(lambda: [numpy_one(q) for q in singles], REPEATS)
        tu1 = _common.time_repeated(
            lambda: [t.search(q).limit(K).select(["id"]).to_arrow() for q in singles], REPEATS)
        tnb = _common.time_repeated(lambda: numpy_batch(queries), REPEATS)
        tub = _common.time_repeated(
            lambda: t.search(queries).limit(K).select(["id"]).to_arrow(), REPEATS)

        # The two must agree (the database is exact).
        got = t.search(singles[:20]).limit(K).select(["id"]).to_list()
        ref = numpy_batch(singles[:20])
        agree = float(np.mean([len({r["id"] for r in g} & set(ref[i].tolist())) / K
                               for i, g in enumerate(got)]))
        db.close()

        q1_u, q1_n = SINGLE_QUERIES / tu1.median, SINGLE_QUERIES / tn1.median
        qb_u, qb_n = len(queries) / tub.median, len(queries) / tnb.median
        rows = [
            {"measure": "ingest rows/s (sync, batch 10k)", "unidb": n / ing["ingest_s"],
             "baseline": None, "ratio": None, "target": ">= 100,000"},
            {"measure": "peak RSS during ingest (MB)", "unidb": ing["peak_rss_mb"],
             "baseline": data_mb, "ratio": ing["peak_rss_mb"] / data_mb,
             "target": "<= ~2x data"},
            {"measure": "bytes on disk per row", "unidb": disk / n, "baseline": 128 * 4 + 16,
             "ratio": disk / n / (128 * 4 + 16), "target": ""},
            {"measure": "process RSS before ingest (MB)", "unidb": ing["rss_before_mb"],
             "baseline": None, "ratio": None, "target": ""},
            {"measure": "reopen (s, median)", "unidb": float(np.median(reopen)),
             "baseline": None, "ratio": None, "target": ""},
            {"measure": "reopen + first key lookup (s)", "unidb": float(np.median(reopen_key)),
             "baseline": None, "ratio": None, "target": ""},
            {"measure": "exact QPS, one query at a time", "unidb": q1_u, "baseline": q1_n,
             "ratio": q1_u / q1_n, "target": ">= 0.8x numpy"},
            {"measure": "exact QPS, batched (1000)", "unidb": qb_u, "baseline": qb_n,
             "ratio": qb_u / qb_n, "target": ">= 0.8x numpy"},
        ]
        title = (f"ingest + exact search, synth n={n:,} x 128, threads={args.threads} "
                 f"(baseline: numpy brute force on one in-memory array)")
        _common.print_table(rows, ["measure", "unidb", "baseline", "ratio", "target"], title)
        print(f"top-10 agreement unidb vs numpy: {agree:.4f}")
        _common.write_results("ingest_exact", {
            "n": n, "threads": args.threads, "rows": rows, "ingest": ing,
            "disk_bytes": disk, "reopen_s": reopen, "reopen_key_s": reopen_key, "agreement": agree,
            "timings": {"unidb_single": tu1.times, "numpy_single": tn1.times,
                        "unidb_batch": tub.times, "numpy_batch": tnb.times}})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
