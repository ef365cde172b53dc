"""Writer process for tests/test_reader_follows_writer.py (readers live in the test process).

Usage: reader_writer_child.py DB_PATH serve
           one JSON command per stdin line ({"op": "add", ...}); answers "OK <json>" or
           "ERR <message>" on stdout after the write returned.
       reader_writer_child.py DB_PATH churn SECONDS SEED
           inserts, deletes, upserts, updates, checkpoints and compactions for SECONDS, then
           prints "DONE <json counters>".

Flushes, compactions, index snapshot saves and partition rebalancing are made frequent by
shrinking the thresholds in OPTIONS, so a short run crosses each of them many times.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

import unidb

OPTIONS = {"storage": {"memtable_flush_bytes": 48 << 10, "memtable_chunk_rows": 256,
                       "compact_small_bytes": 32 << 10, "compact_target_bytes": 256 << 10},
           "indexes": {"save_min_changes": 150, "save_min_fraction": 0.0}}

DIM = 8
WORDS = [f"w{i}" for i in range(40)]
SPARSE_DIMS = 50
# Small postings: splits and merges (LIRE) run all the time in both processes.
PARTITION_OPTIONS = {"target_posting": 16}


def schema() -> dict:
    return {"id": unidb.Int64(primary_key=True), "num": unidb.Float64(),
            "body": unidb.Text(analyzer="standard"), "sp": unidb.SparseVector(),
            "emb": unidb.Vector(DIM)}


def rows(start: int, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    body = [" ".join(rng.choice(WORDS, int(rng.integers(2, 7))).tolist()) for _ in range(n)]
    sp = []
    for _ in range(n):
        idx = np.sort(rng.choice(SPARSE_DIMS, int(rng.integers(1, 5)), replace=False))
        sp.append({"indices": idx.tolist(),
                   "values": np.round(rng.uniform(0.1, 2.0, len(idx)), 3).tolist()})
    return {"id": np.arange(start, start + n), "num": np.round(rng.uniform(0, 1000, n), 3),
            "body": body, "sp": sp, "emb": rng.standard_normal((n, DIM)).astype(np.float32)}


def open_table(db):
    if "t" in db.table_names():
        return db.open_table("t")
    return db.create_table("t", schema())


def run_command(db, t, cmd: dict):
    op = cmd["op"]
    if op == "add":
        return t.add(rows(cmd["start"], cmd["n"], cmd.get("seed", cmd["start"])))
    if op == "upsert":
        return t.upsert(rows(cmd["start"], cmd["n"], cmd.get("seed", cmd["start"] + 1)))
    if op == "delete":
        return t.delete(ids=cmd.get("ids"), where=cmd.get("where"))
    if op == "update":
        return t.update(where=cmd["where"], values=cmd["values"])
    if op == "compact":
        return t.compact()
    if op == "flush":
        t.flush()
        return len(t._store.manifest.segments)
    if op == "create_index":
        t.create_index(cmd["column"], cmd.get("kind"), **cmd.get("options", {}))
        return t.list_indexes()
    if op == "drop_index":
        t.drop_index(cmd["column"])
        return t.list_indexes()
    if op == "segments":
        return list(t._store.manifest.segments)
    raise ValueError(f"unknown op {op!r}")


def serve(path: str) -> None:
    db = unidb.connect(path, options=OPTIONS)
    t = open_table(db)
    print("READY", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            out = run_command(db, t, cmd)
        except Exception as e:                       # reported to the test, which fails
            print("ERR", repr(e), flush=True)
            continue
        print("OK", json.dumps(out, default=str), flush=True)
    db.close()
    print("BYE", flush=True)


def churn(path: str, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    db = unidb.connect(path, options=OPTIONS)
    t = open_table(db)
    if not len(t):
        t.add(rows(0, 400, seed))
    if "emb" not in t.list_indexes():
        t.create_index("emb", "partition", **PARTITION_OPTIONS)
    if "num" not in t.list_indexes():
        t.create_index("num", "sorted")
    live = set(int(i) for i in t.to_arrow(columns=["id"]).column("id").to_pylist())
    nxt = max(live) + 1 if live else 0
    counts = {"add": 0, "delete": 0, "upsert": 0, "update": 0, "compact": 0, "flush": 0}
    print("READY", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = rng.random()
        if r < 0.40 or len(live) < 200:
            n = int(rng.integers(5, 60))
            t.add(rows(nxt, n, int(rng.integers(1 << 30))))
            live.update(range(nxt, nxt + n))
            nxt += n
            counts["add"] += 1
        elif r < 0.65:
            victims = rng.choice(sorted(live), size=min(len(live), int(rng.integers(5, 50))),
                                 replace=False).tolist()
            t.delete(ids=victims)
            live.difference_update(victims)
            counts["delete"] += 1
        elif r < 0.80:
            ids = rng.choice(sorted(live), size=min(len(live), 20), replace=False)
            batch = rows(0, len(ids), int(rng.integers(1 << 30)))
            batch["id"] = ids
            t.upsert(batch)
            counts["upsert"] += 1
        elif r < 0.88:
            lo = float(rng.uniform(0, 990))
            t.update(where=f"num >= {lo} AND num < {lo + 10}",
                     values={"body": " ".join(rng.choice(WORDS, 3).tolist()) + " updated"})
            counts["update"] += 1
        elif r < 0.95:
            t.compact()
            counts["compact"] += 1
        else:
            t.flush()
            counts["flush"] += 1
    db.close()
    print("DONE", json.dumps(counts), flush=True)


if __name__ == "__main__":
    if sys.argv[2] == "serve":
        serve(sys.argv[1])
    else:
        churn(sys.argv[1], float(sys.argv[3]), int(sys.argv[4]))
