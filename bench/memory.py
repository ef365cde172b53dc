"""Larger-than-memory benchmark (issue #13): each phase in a child process under a cgroup-v1
memory limit, which counts page cache as well as the process's own memory.

Phases, on synth1m (or its first --n rows), one child process each:

1. `ingest`  the base vectors into a table (`id` Int64 key, `emb` Vector(128)), batches of
             10,000, `sync` durability; no cap. Time, rows/s, peak RSS, bytes on disk.
2. `build`   a partition index on `emb` (default options); no cap. Time, peak RSS and its
             ratio to the raw vectors (n x 128 x 4 bytes).
3. `serve`   once per cap (--caps, MB; 0 = no cap): a read-only open of the table (time, RSS
             after the open), the first `get` (which builds the primary-key map), the first
             search, then 1,000 warm-up
             and 1,000 measured searches one at a time through the public API
             (`t.search(q).limit(10).to_list()`): recall@10 against the exact ground truth,
             under-filled results, p50/p99 latency. Whether the cap killed it, and at which step.

How a phase is capped (cgroup v1, as root): the script makes a memory cgroup of its own,
`/sys/fs/cgroup/memory/unidb-bench-<pid>-<phase>` (--cgroup-root to put it elsewhere),
writes the cap into its `memory.limit_in_bytes` (nothing for an uncapped phase, which is still
measured), starts the child, which waits on its stdin before it imports anything, writes the
child's pid into the cgroup's `cgroup.procs` and then tells the child to go, so that every
byte the child touches is charged to the cgroup. After the child exits the script reads
`memory.max_usage_in_bytes` (peak of RSS + page cache), `memory.failcnt` and the `oom_kill`
count of `memory.oom_control`, and removes the cgroup (`rmdir`); an OOM-killed child shows as
`oom_kill` > 0 and/or death by SIGKILL. Nothing else under the cgroup root is touched.

Page cache is charged to the cgroup that first reads a page, so before each phase the script
drops the database's files from the page cache (`posix_fadvise(DONTNEED)`): a capped child
pays for every page of the table and index it reads, as a freshly booted server would.

Prints a table and writes JSON to bench/results/::

    .venv/bin/python bench/memory.py [--n 1000000] [--caps 400,800,1500,0] [--keep-db DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DIM = 128
BATCH = 10_000
K = 10
WARMUP = 1_000
MEASURED = 1_000
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
TABLE = "synth"


# ------------------------------------------------------------------ the children (phases)

def emit(**fields) -> None:
    """One JSON line to the parent (a phase may die after any of them)."""
    fields["rss_mb"] = _common.current_rss_mb()
    fields["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(fields), flush=True)


def peak_rss_mb() -> float:
    """This process's peak RSS, MiB: VmHWM, which exec resets (getrusage's ru_maxrss would
    report the parent's peak, inherited through fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return _common.peak_rss_mb()


def child_ingest(db_path: str, n: int) -> None:
    import numpy as np
    import unidb
    from unidb.datasets import synth

    base = synth(n, "base")
    db = unidb.connect(db_path, durability="sync")
    t = db.create_table(TABLE, {"id": unidb.Int64(primary_key=True), "emb": unidb.Vector(DIM)})
    t0 = time.perf_counter()
    for s in range(0, n, BATCH):
        e = min(s + BATCH, n)
        t.add({"id": np.arange(s, e), "emb": np.asarray(base[s:e])})
    ingest_s = time.perf_counter() - t0
    db.close()
    emit(step="ingest", seconds=ingest_s, rows_per_s=n / ingest_s,
         total_s=time.perf_counter() - t0, disk_mb=_common.dir_size_mb(db_path))


def child_build(db_path: str, n: int) -> None:
    import unidb

    db = unidb.connect(db_path)
    t = db.open_table(TABLE)
    t0 = time.perf_counter()
    t.create_index("emb", kind="partition")
    build_s = time.perf_counter() - t0
    db.close()
    emit(step="build", seconds=build_s, total_s=time.perf_counter() - t0,
         raw_mb=n * DIM * 4 / 2**20, disk_mb=_common.dir_size_mb(db_path))


def child_serve(db_path: str, n: int, gt_path: str) -> None:
    import numpy as np
    import unidb
    from unidb.datasets import synth
    from unidb.evaluate import recall_at_k, underfilled

    queries = np.ascontiguousarray(synth(MEASURED, "queries"))
    truth = np.load(gt_path)
    rss0 = _common.current_rss_mb()
    t0 = time.perf_counter()
    db = unidb.connect(db_path, read_only=True)
    t = db.open_table(TABLE)
    rows = len(t)
    emit(step="open", seconds=time.perf_counter() - t0, rows=rows, rss_before_mb=rss0)
    t0 = time.perf_counter()
    assert t.get(ids=[rows // 2]).num_rows == 1        # builds the primary-key map
    emit(step="first_get", seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    t.search(queries[0]).limit(K).to_list()
    emit(step="first_query", seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(WARMUP):
        t.search(queries[i % len(queries)]).limit(K).to_list()
    emit(step="warmup", seconds=time.perf_counter() - t0, queries=WARMUP)
    lat, found = [], []
    for i in range(MEASURED):
        q = queries[i % len(queries)]
        s = time.perf_counter()
        res = t.search(q).limit(K).to_list()
        lat.append(time.perf_counter() - s)
        found.append([r["id"] for r in res])
    lat_ms = np.array(lat) * 1e3
    idx = np.arange(MEASURED) % len(queries)
    emit(step="query", queries=MEASURED, recall=recall_at_k(found, truth[idx], K),
         underfilled=underfilled(found, K), p50_ms=float(np.percentile(lat_ms, 50)),
         p99_ms=float(np.percentile(lat_ms, 99)), qps=MEASURED / (lat_ms.sum() / 1e3))
    db.close()


CHILDREN = {"ingest": child_ingest, "build": child_build, "serve": child_serve}


def child_main(phase: str, args: list[str]) -> None:
    sys.stdin.readline()              # wait until the parent has put us into our cgroup
    _common.configure_threads(1)
    CHILDREN[phase](args[0], int(args[1]), *args[2:])


# ------------------------------------------------------------------ the parent (harness)

def drop_page_cache(folder: Path) -> None:
    """Evict the folder's files from the page cache (clean pages; nothing is written)."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def read_cgroup(cg: Path) -> dict:
    oom = dict(line.split() for line in (cg / "memory.oom_control").read_text().splitlines())
    return {"cg_max_mb": int((cg / "memory.max_usage_in_bytes").read_text()) / 2**20,
            "cg_failcnt": int((cg / "memory.failcnt").read_text()),
            "oom_kill": int(oom.get("oom_kill", 0))}


def run_phase(phase: str, child_args: list[str], cap_mb: int, root: Path,
              timeout_s: float) -> dict:
    """Run one phase in a child inside a cgroup of its own, capped at `cap_mb` (0: no cap)."""
    cg = root / f"unidb-bench-{os.getpid()}-{phase}-{cap_mb}"
    cg.mkdir()
    steps: list[dict] = []
    t0 = time.perf_counter()
    try:
        if cap_mb:
            (cg / "memory.limit_in_bytes").write_text(str(cap_mb * 2**20))
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", phase,
                                 *child_args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        try:
            (cg / "cgroup.procs").write_text(str(proc.pid))
            proc.stdin.write("go\n")
            proc.stdin.close()
            timer = threading.Timer(timeout_s, proc.kill)
            timer.start()
            try:
                for line in proc.stdout:
                    if line.startswith("{"):
                        steps.append(json.loads(line))
                rc = proc.wait()
            finally:
                timer.cancel()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        result = {"phase": phase, "cap_mb": cap_mb or None, "rc": rc,
                  "wall_s": time.perf_counter() - t0, **read_cgroup(cg)}
    finally:
        for _ in range(50):              # the cgroup is empty once the child is reaped
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    result["oom"] = result["oom_kill"] > 0 or rc == -signal.SIGKILL
    result["reached"] = steps[-1]["step"] if steps else None
    result["steps"] = steps
    return result


def summary(r: dict) -> dict:
    by = {s["step"]: s for s in r["steps"]}
    last = r["steps"][-1] if r["steps"] else {}
    row = {"phase": r["phase"], "cap_mb": r["cap_mb"] or "none",
           "status": "OOM" if r["oom"] else ("ok" if r["rc"] == 0 else f"rc {r['rc']}"),
           "reached": r["reached"], "peak_rss_mb": last.get("peak_rss_mb"),
           "cg_max_mb": r["cg_max_mb"]}
    main = by.get(r["phase"]) or by.get("open")
    if main is not None:
        row["seconds"] = main.get("seconds")
    if "build" in by:
        row["peak/raw"] = by["build"]["peak_rss_mb"] / by["build"]["raw_mb"]
    if "ingest" in by:
        row["rows/s"] = by["ingest"]["rows_per_s"]
    if "open" in by:
        row["rss_open_mb"] = by["open"]["rss_mb"] - by["open"]["rss_before_mb"]
    if "first_get" in by:
        row["rss_get_mb"] = by["first_get"]["rss_mb"] - by["open"]["rss_before_mb"]
    if "first_query" in by:
        row["first_q_s"] = by["first_query"]["seconds"]
        row["rss_1q_mb"] = by["first_query"]["rss_mb"] - by["open"]["rss_before_mb"]
    if "query" in by:
        q = by["query"]
        row.update({"recall@10": q["recall"], "p50_ms": q["p50_ms"], "p99_ms": q["p99_ms"],
                    "underfilled": q["underfilled"]})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--caps", default="400,800,1500,0",
                    help="memory caps of the serve phase in MB, 0 = none (default %(default)s)")
    ap.add_argument("--keep-db", metavar="DIR",
                    help="build the database in DIR and keep it (reused when it exists)")
    ap.add_argument("--cgroup-root", default=str(CGROUP_ROOT))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per phase")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child[0], args.child[1:])
        return
    root = Path(args.cgroup_root)
    if not os.access(root, os.W_OK):
        sys.exit(f"{root} is not a writable cgroup-v1 memory hierarchy: run as root on a "
                 f"machine with the v1 memory controller (or pass --cgroup-root)")
    caps = [int(c) for c in args.caps.split(",")]

    _common.configure_threads(1)
    import numpy as np
    from unidb.datasets import synth_ground_truth

    work = Path(args.keep_db) if args.keep_db else Path(tempfile.mkdtemp(prefix="unidb-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "synth.unidb"
    gt_path = work / f"gt-{args.n}.npy"
    results = []
    try:
        np.save(gt_path, synth_ground_truth(args.n, k=K)[0])
        if not db_path.exists():
            results.append(run_phase("ingest", [str(db_path), str(args.n)], 0, root,
                                     args.timeout))
            drop_page_cache(work)
            results.append(run_phase("build", [str(db_path), str(args.n)], 0, root,
                                     args.timeout))
        for cap in caps:
            drop_page_cache(work)
            results.append(run_phase("serve", [str(db_path), str(args.n), str(gt_path)], cap,
                                     root, args.timeout))
            print(json.dumps(summary(results[-1])), flush=True)
    finally:
        if not args.keep_db:
            shutil.rmtree(work, ignore_errors=True)
    rows = [summary(r) for r in results]
    _common.print_table(rows, ["phase", "cap_mb", "status", "reached", "seconds", "rows/s",
                               "peak_rss_mb", "cg_max_mb", "peak/raw", "rss_open_mb",
                               "rss_get_mb", "first_q_s", "rss_1q_mb", "recall@10", "p50_ms",
                               "p99_ms", "underfilled"],
                        title=f"memory: synth n={args.n}, one query at a time")
    path = _common.write_results("memory", {"n": args.n, "caps_mb": caps, "phases": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
