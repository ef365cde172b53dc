"""What checksums and the failure rules cost users: ingest, checkpoint, reopen, index reopen.

Runs the same public-API workload against two source trees in one run — this checkout and a
baseline commit (default: the last commit before issue #11's checksums) — alternating, each
phase in a fresh child process, and reports medians and the ratio current / baseline:

  ingest     `t.add` of N x 128-d float32 rows in batches of 10k (sync durability: one WAL
             append + fsync per batch), including the automatic checkpoints
  flush      the final explicit checkpoint (segment write + manifest)
  reopen     connect + open_table (reads and verifies every segment and the index snapshot)
  first_search  reopen + the first search (through the partition index unless --no-index)

    .venv/bin/python bench/reliability.py [--n 200000] [--baseline 1eef230] [--repeats 3]
                                          [--no-index]   (1M rows: skip the index build)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

REPO = Path(__file__).resolve().parents[1]
DIM = 128
BATCH = 10_000


def child(db_path: str, n: int, index: bool) -> None:
    """One measurement in a fresh process; prints a JSON line of timings."""
    import numpy as np
    import unidb
    rng = np.random.default_rng(0)
    out = {}
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
    out["reopen_s"] = time.perf_counter() - t0           # includes the index snapshot load
    q = np.zeros(DIM, np.float32)
    t.search(q).limit(10).to_list()
    out["first_search_s"] = time.perf_counter() - t0
    db.close()
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--baseline", default="1eef230", help="commit to compare against")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-index", action="store_true", help="no partition index (faster at 1M)")
    ap.add_argument("--child", nargs=3, metavar=("DB", "N", "INDEX"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    _common.configure_threads(1)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2] == "1")
        return
    work = Path(tempfile.mkdtemp(prefix="unidb-rel-"))
    base_tree = work / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q",
                    str(base_tree), args.baseline], check=True)
    trees = {"baseline": base_tree, "current": REPO}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    try:
        for rep in range(-1, args.repeats):          # rep -1 warms numba's per-tree cache
            for name, tree in trees.items():         # alternate: noise hits both alike
                db = work / f"{name}-{rep}.unidb"
                env = dict(os.environ, PYTHONPATH=str(tree))
                res = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                      "--child", str(db), str(args.n if rep >= 0 else 2 * BATCH),
                                      "0" if args.no_index else "1"], env=env, cwd=tree,
                                     check=True, capture_output=True, text=True)
                if rep >= 0:
                    runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
                shutil.rmtree(db, ignore_errors=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                        str(base_tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for key in ("ingest_s", "flush_s", "reopen_s", "first_search_s"):
        b = statistics.median(r[key] for r in runs["baseline"])
        c = statistics.median(r[key] for r in runs["current"])
        rows.append({"phase": key, "baseline_s": round(b, 3), "current_s": round(c, 3),
                     "ratio": round(c / b, 2)})
    mb = args.n * DIM * 4 / 2**20
    _common.print_table(rows, ["phase", "baseline_s", "current_s", "ratio"],
                        title=f"reliability overhead: {args.n:,} x {DIM}-d rows ({mb:.0f} MB), "
                              f"medians of {args.repeats}, baseline {args.baseline}")
    path = _common.write_results("reliability", {"n": args.n, "dim": DIM,
                                                 "index": not args.no_index,
                                                 "baseline": args.baseline, "runs": runs,
                                                 "table": rows,
                                                 "machine": _common.machine_info(),
                                                 "threads": _common.thread_env()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
