"""What checksums and the failure rules cost users: ingest, checkpoint, reopen, first search.

Runs the same public-API workload against this checkout and a baseline commit (default: the
last commit before issue #11's checksums), alternating, each run in a fresh process, and
reports medians and the ratio current / baseline:

  ingest_s        `t.add` of N x 128-d float32 rows in batches of 10k (sync durability: one
                  WAL append + fsync per batch), including the automatic checkpoints
  flush_s         the final explicit checkpoint (segment write + manifest)
  reopen_s        connect + open_table (reads and verifies every segment and index snapshot)
  first_search_s  reopen + the first search (through the partition index unless --no-index)

    .venv/bin/python bench/reliability.py [--n 200000] [--baseline 1eef230] [--repeats 3]
                                          [--no-index]   (1M rows: skip the index build)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _common

DIM = 128
BATCH = 10_000
KEYS = ("ingest_s", "flush_s", "reopen_s", "first_search_s")


def child(n: int, index: bool) -> None:
    """One measurement in a fresh process; prints a JSON line of timings."""
    import numpy as np
    import unidb
    rng = np.random.default_rng(0)
    out = {}
    db_path = Path(tempfile.mkdtemp(prefix="unidb-rel-")) / "db.unidb"
    db = unidb.connect(db_path)
    t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "emb": unidb.Vector(DIM)})
    t0 = time.perf_counter()
    for lo in range(0, n, BATCH):
        hi = min(n, lo + BATCH)
        t.add({"id": np.arange(lo, hi), "emb": rng.standard_normal((hi - lo, DIM), np.float32)})
    out["ingest_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    t.flush()
    out["flush_s"] = time.perf_counter() - t0
    if index:
        t.create_index("emb", kind="partition")
    db.close()
    t0 = time.perf_counter()
    db = unidb.connect(db_path)
    t = db.open_table("t")
    assert len(t) == n
    out["reopen_s"] = time.perf_counter() - t0
    t.search(np.zeros(DIM, np.float32)).limit(10).to_list()
    out["first_search_s"] = time.perf_counter() - t0
    db.close()
    import shutil
    shutil.rmtree(db_path.parent, ignore_errors=True)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--baseline", default="1eef230", help="commit to compare against")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-index", action="store_true", help="no partition index (faster at 1M)")
    ap.add_argument("--child", nargs=2, metavar=("N", "INDEX"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    _common.configure_threads(1)
    if args.child:
        child(int(args.child[0]), args.child[1] == "1")
        return
    index = "0" if args.no_index else "1"
    runs = _common.run_against_baseline(
        Path(__file__).resolve(), lambda rep: [str(args.n if rep >= 0 else 2 * BATCH), index],
        args.baseline, args.repeats)
    rows = _common.ab_table(runs, KEYS)
    mb = args.n * DIM * 4 / 2**20
    _common.print_table(rows, ["measure", "baseline", "current", "ratio"],
                        title=f"reliability overhead: {args.n:,} x {DIM}-d rows ({mb:.0f} MB), "
                              f"index={not args.no_index}, medians of {args.repeats}, "
                              f"baseline {args.baseline}")
    path = _common.write_results("reliability", {
        "n": args.n, "dim": DIM, "index": not args.no_index, "baseline": args.baseline,
        "runs": runs, "table": rows, "machine": _common.machine_info(),
        "threads": _common.thread_env()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
