"""Child for the index crash test: heavy inserts into a table with a partition index (small
postings, so splits/merges/reassigns run constantly), reporting acknowledged batches."""
import sys

import numpy as np

import unidb

OPTIONS = {"storage": {"memtable_flush_bytes": 256 << 10},   # frequent checkpoints ...
           "indexes": {"save_min_changes": 500}}             # ... and index snapshots
DIM = 16


def main() -> None:
    path, start, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    db = unidb.connect(path, options=OPTIONS)
    if "t" in db.table_names():
        t = db.open_table("t")
    else:
        t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "v": unidb.Vector(DIM)})
        t.add({"id": np.arange(2000), "v": rng.standard_normal((2000, DIM)).astype(np.float32)})
        t.create_index("v", kind="partition", target_posting=40, max_posting=80)
    print("READY", flush=True)
    nxt = start
    while True:
        centre = rng.standard_normal(DIM) * 3        # drifting clusters force splits
        v = (centre + rng.standard_normal((200, DIM))).astype(np.float32)
        t.add({"id": np.arange(nxt, nxt + 200), "v": v})
        print("ACK", nxt, 200, flush=True)
        nxt += 200
        if rng.random() < 0.3:
            victims = rng.integers(start, nxt, 50).tolist()
            print("TRY", *victims, flush=True)       # may land or not if killed now
            t.delete(ids=victims)
            print("DEL", flush=True)


if __name__ == "__main__":
    main()
