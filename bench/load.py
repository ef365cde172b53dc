"""Server load: search QPS and p50/p99 latency over HTTP with 1, 4 and 16 concurrent clients,
and mixed read/write, next to the embedded API on the same data in the same run.

    .venv/bin/python bench/load.py [--seconds 2] [--repeats 3] [--clients 1,4,16]

Data: SIFT-small (10k x 128, L2, 100 queries) from ../shared/data, or random vectors of the
same shape when it is absent. Top-10 exact search (no index: every search scans all rows, so
the figures isolate the serving overhead). The server runs as a subprocess (`unidb serve`,
127.0.0.1 only, API key, no access log); clients are threads of this process, each with its
own connection. Mixed: one writer adding batches of 100 rows, the other clients searching.
Checks: zero errors, and the row count after the run equals the acknowledged writes.
Medians of --repeats runs of --seconds each. On a 2-core machine the client threads and the
server share the cores, so absolute QPS under concurrency is a floor, not a ceiling.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.configure_threads(1)

import numpy as np  # noqa: E402

import unidb  # noqa: E402
from unidb.server.auth import KeyStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
K = 10
WRITE_BATCH = 100
STARTUP_S = 60
NEW_ID_BASE = 10**9          # ids of rows written during the run


def load_data() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from unidb import datasets
        ds = datasets.load_siftsmall()
        return ds.base, ds.queries, "siftsmall"
    except Exception:  # noqa: BLE001 - the shared data folder is optional
        rng = np.random.default_rng(0)
        return (rng.standard_normal((10_000, 128)).astype(np.float32),
                rng.standard_normal((100, 128)).astype(np.float32), "random-10k-128")


def build(path: Path, base: np.ndarray) -> None:
    db = unidb.connect(path)
    t = db.create_table("items", {"id": unidb.Int64(primary_key=True),
                                  "cat": unidb.String(), "emb": unidb.Vector(base.shape[1])})
    for s in range(0, len(base), 10_000):
        e = min(len(base), s + 10_000)
        t.add({"id": np.arange(s, e), "cat": [f"c{i % 10}" for i in range(s, e)],
               "emb": base[s:e]})
    t.flush()
    db.close()


class Run:
    """One timed load: n searcher threads (+ optional writer) for `seconds`."""

    def __init__(self, open_table, queries: np.ndarray, searchers: int, writer: bool,
                 seconds: float, next_id: list[int]):
        self.open_table, self.queries = open_table, queries
        self.searchers, self.writer, self.seconds = searchers, writer, seconds
        self.next_id = next_id
        self.lat: list[float] = []
        self.wlat: list[float] = []
        self.errors: list[str] = []
        self.acked_rows = 0
        self._lock = threading.Lock()

    def _search_loop(self, i: int, deadline: float) -> None:
        t = self.open_table()
        lat = []
        j = i
        try:
            while time.perf_counter() < deadline:
                q = self.queries[j % len(self.queries)]
                j += 7
                t0 = time.perf_counter()
                hits = t.search(q).limit(K).select(["id"]).to_list()
                lat.append(time.perf_counter() - t0)
                if len(hits) != K:
                    raise RuntimeError(f"{len(hits)} hits instead of {K}")
        except Exception as e:  # noqa: BLE001 - counted and reported
            with self._lock:
                self.errors.append(repr(e))
        with self._lock:
            self.lat += lat

    def _write_loop(self, deadline: float) -> None:
        t = self.open_table()
        dim = self.queries.shape[1]
        rng = np.random.default_rng(len(self.wlat))
        try:
            while time.perf_counter() < deadline:
                with self._lock:
                    start = self.next_id[0]
                    self.next_id[0] += WRITE_BATCH
                ids = np.arange(start, start + WRITE_BATCH)
                rows = {"id": ids, "cat": ["w"] * WRITE_BATCH,
                        "emb": rng.standard_normal((WRITE_BATCH, dim)).astype(np.float32) * 50}
                t0 = time.perf_counter()
                t.add(rows)
                self.wlat.append(time.perf_counter() - t0)
                self.acked_rows += WRITE_BATCH
        except Exception as e:  # noqa: BLE001
            with self._lock:
                self.errors.append(repr(e))

    def go(self) -> dict:
        deadline = time.perf_counter() + self.seconds
        threads = [threading.Thread(target=self._search_loop, args=(i, deadline))
                   for i in range(self.searchers)]
        if self.writer:
            threads.append(threading.Thread(target=self._write_loop, args=(deadline,)))
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        lat = np.array(self.lat) * 1e3
        out = {"qps": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)) if len(lat)
               else None, "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
               "searches": len(lat), "errors": len(self.errors), "error_samples":
               self.errors[:3], "acked_rows": self.acked_rows}
        if self.writer:
            wl = np.array(self.wlat) * 1e3
            out.update(write_rows_s=self.acked_rows / wall,
                       write_p50_ms=float(np.percentile(wl, 50)) if len(wl) else None,
                       write_p99_ms=float(np.percentile(wl, 99)) if len(wl) else None)
        return out


def measure(mode: str, open_table, queries, clients: list[int], seconds: float, repeats: int,
            next_id: list[int]) -> list[dict]:
    rows = []
    warm = open_table()
    for q in queries[:20]:
        warm.search(q).limit(K).to_list()
    configs = [(c, False, f"search x{c}") for c in clients] + \
        [(3, True, "mixed 3 search + 1 write")]
    for searchers, writer, label in configs:
        reps = [Run(open_table, queries, searchers, writer, seconds, next_id).go()
                for _ in range(repeats)]
        med = {k: statistics.median([r[k] for r in reps if r.get(k) is not None])
               for k in reps[0] if isinstance(reps[0][k], (int, float)) and k != "errors"}
        med.update(mode=mode, load=label, clients=searchers + writer,
                   errors=sum(r["errors"] for r in reps),
                   acked_rows=sum(r["acked_rows"] for r in reps),
                   error_samples=[e for r in reps for e in r["error_samples"]][:3])
        rows.append(med)
        print(f"  {mode:8s} {label:26s} {med['qps']:8.1f} QPS  p50 {med['p50_ms']:.2f} ms  "
              f"p99 {med['p99_ms']:.2f} ms  errors {med['errors']}", flush=True)
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(path: Path, port: int) -> subprocess.Popen:
    import httpx
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "unidb.cli", "serve", str(path), "--port",
                          str(port), "--no-access-log", "--log-level", "warning"],
                         cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + STARTUP_S
    while time.time() < deadline:
        if p.poll() is not None:
            raise SystemExit("the server exited during startup")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return p
        except httpx.HTTPError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit("the server did not start")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=_common.DEFAULT_REPEATS)
    ap.add_argument("--clients", default="1,4,16")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    base, queries, data_name = load_data()
    tmp = Path(tempfile.mkdtemp(prefix="unidb-load-"))
    path = tmp / "db.unidb"
    print(f"data {data_name}: {base.shape[0]:,} x {base.shape[1]}, {len(queries)} queries, "
          f"top-{K} exact; {args.repeats} x {args.seconds:g} s per point", flush=True)
    build(path, base)
    next_id = [NEW_ID_BASE]
    acked = 0

    db = unidb.connect(path)
    table = db.open_table("items")
    embedded = measure("embedded", lambda: table, queries, clients, args.seconds,
                       args.repeats, next_id)
    acked += sum(r["acked_rows"] for r in embedded)
    db.close()

    key = KeyStore(path).create("admin", "bench")
    port = free_port()
    server = start_server(path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        def open_remote():
            return unidb.connect(url, api_key=key).open_table("items")
        remote = measure("http", open_remote, queries, clients, args.seconds, args.repeats,
                         next_id)
        acked += sum(r["acked_rows"] for r in remote)
        remote_count = len(open_remote())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    db = unidb.connect(path)
    final_count = len(db.open_table("items"))
    db.close()
    expected = len(base) + acked
    errors = sum(r["errors"] for r in embedded + remote)

    by = {(r["mode"], r["load"]): r for r in embedded + remote}
    table_rows = []
    for r in embedded + remote:
        e = by[("embedded", r["load"])]
        row = {"mode": r["mode"], "load": r["load"], "QPS": r["qps"], "p50 ms": r["p50_ms"],
               "p99 ms": r["p99_ms"], "QPS / embedded": r["qps"] / e["qps"],
               "writes rows/s": r.get("write_rows_s"), "errors": r["errors"]}
        table_rows.append(row)
    _common.print_table(table_rows, ["mode", "load", "QPS", "p50 ms", "p99 ms",
                                     "QPS / embedded", "writes rows/s", "errors"],
                        title="search top-10 (exact) and mixed read/write, median of runs")
    overhead = by[("http", f"search x{clients[0]}")]["p50_ms"] - \
        by[("embedded", f"search x{clients[0]}")]["p50_ms"]
    print(f"HTTP overhead per search (p50, {clients[0]} client): {overhead:.3f} ms")
    print(f"rows after the run: {final_count:,} (server saw {remote_count:,}); "
          f"expected {expected:,} = {len(base):,} + {acked:,} acknowledged; errors: {errors}")
    ok = errors == 0 and final_count == expected == remote_count
    out = _common.write_results("load", {
        "data": data_name, "rows": int(base.shape[0]), "dim": int(base.shape[1]), "k": K,
        "seconds": args.seconds, "repeats": args.repeats, "results": embedded + remote,
        "http_overhead_p50_ms": overhead, "acked_rows": acked, "final_rows": final_count,
        "expected_rows": expected, "errors": errors, "ok": ok})
    print(f"wrote {out}")
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
