"""Child process for crash tests: writes, reports each acknowledged write, until killed.

Usage: crash_child.py DB_PATH MODE START SEED
MODE "insert": add batches of 100 rows with ids START.. ; prints "ACK <first id> <n>".
MODE "churn": like insert, and also deletes random acknowledged rows ("DEL <id> ...") and
compacts often, so kills land inside flushes and compactions.
"""
import sys

import numpy as np

import unidb

# Small in-memory table so flushes (and compactions) happen many times per second.
OPTIONS = {"storage": {"memtable_flush_bytes": 64 << 10, "compact_small_bytes": 48 << 10,
                       "compact_target_bytes": 256 << 10}}

BATCH = 100
DIM = 16


def rows(start: int, n: int) -> dict:
    ids = np.arange(start, start + n)
    return {"id": ids, "tag": [f"b{start}"] * n, "v": np.tile(ids[:, None], (1, DIM)).astype(np.float32)}


def main() -> None:
    path, mode, start, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(seed)
    db = unidb.connect(path, options=OPTIONS)
    if "t" in db.table_names():
        t = db.open_table("t")
    else:
        t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "tag": unidb.String(),
                                  "v": unidb.Vector(DIM)})
    print("READY", flush=True)
    nxt = start
    acked: list[int] = []
    while True:
        t.add(rows(nxt, BATCH))
        print("ACK", nxt, BATCH, flush=True)
        acked.extend(range(nxt, nxt + BATCH))
        nxt += BATCH
        if mode == "churn" and len(acked) > 300:
            victims = rng.choice(acked, size=40, replace=False).tolist()
            print("TRY", *victims, flush=True)      # may or may not land if killed now
            t.delete(ids=victims)
            print("DEL", flush=True)                 # acknowledged
            acked = [a for a in acked if a not in set(victims)]
            if rng.random() < 0.3:
                t.compact()


if __name__ == "__main__":
    main()
