"""Primary-key map benchmark: memory per row and lookup speed at 1M rows, int and string keys.

Builds a table of n rows (keys shuffled, so no segment is key-sorted), checkpoints it, reopens
it and measures, through the public API:

- `build`: the first `t.get` after the open, which builds the key map (seconds, the bytes it
  left allocated per row by tracemalloc (numpy and Python objects) plus Arrow's pool, and the
  RSS growth);
- `get1`: `t.get(ids=[k])` one key at a time (microseconds per call);
- `get1000`: `t.get(ids=1,000 keys)` (milliseconds per call);
- `add_dup`: `t.add` of 10,000 new rows whose last key exists: the duplicate check rejects it
  (milliseconds; nothing is written);
- `upsert`: `t.upsert` of 10,000 existing keys (milliseconds, the whole write in `async`
  durability).

Medians of 3 repetitions. Run it on two checkouts to compare them (the script only uses the
public API)::

    PYTHONPATH=/path/to/checkout .venv/bin/python bench/keys.py --label after [--n 1000000]
"""
from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.configure_threads(1)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import unidb  # noqa: E402
from unidb.errors import ValidationError  # noqa: E402

INGEST_BATCH = 100_000
WRITE_ROWS = 10_000
SINGLE_GETS = 1_000
BATCH_GETS = 20


def key_values(kind: str, ids: np.ndarray) -> list | np.ndarray:
    return ids if kind == "int" else [f"user-{i:010d}" for i in ids.tolist()]


def run(kind: str, n: int, folder: Path) -> dict:
    rng = np.random.default_rng(7)
    perm = rng.permutation(n).astype(np.int64)
    pk = unidb.Int64(primary_key=True) if kind == "int" else unidb.String(primary_key=True)
    db = unidb.connect(folder / kind, durability="async")
    t = db.create_table("t", {"id": pk, "x": unidb.Float64()})
    for s in range(0, n, INGEST_BATCH):
        ids = perm[s:s + INGEST_BATCH]
        t.add({"id": key_values(kind, ids), "x": ids.astype(np.float64)})
    db.close()

    gc.collect()
    db = unidb.connect(folder / kind, durability="async")
    t = db.open_table("t")
    probe = key_values(kind, perm[:1])
    rss0 = _common.current_rss_mb()
    arrow0 = pa.total_allocated_bytes()
    tracemalloc.start()
    t0 = time.perf_counter()
    got = t.get(ids=probe)
    build_s = time.perf_counter() - t0
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert got.num_rows == 1
    arrow_bytes = pa.total_allocated_bytes() - arrow0
    rss_mb = _common.current_rss_mb() - rss0
    out = {"kind": kind, "n": n, "build_s": build_s,
           "build_bytes_per_row": (traced + arrow_bytes) / n, "build_rss_mb": rss_mb}

    singles = key_values(kind, rng.choice(n, SINGLE_GETS))

    def get1():
        for k in singles:
            t.get(ids=[k])
    out["get1_us"] = _common.time_repeated(get1).median / SINGLE_GETS * 1e6

    batches = [key_values(kind, rng.choice(n, 1000)) for _ in range(BATCH_GETS)]

    def get1000():
        for b in batches:
            assert t.get(ids=b, columns=["x"]).num_rows == 1000
    out["get1000_ms"] = _common.time_repeated(get1000).median / BATCH_GETS * 1e3

    fresh = np.arange(n, n + WRITE_ROWS, dtype=np.int64)
    fresh[-1] = perm[5]                                     # an existing key, checked last

    def add_dup():
        try:
            t.add({"id": key_values(kind, fresh), "x": fresh.astype(np.float64)})
        except ValidationError:
            return
        raise AssertionError("the duplicate was not rejected")
    out["add_dup_ms"] = _common.time_repeated(add_dup).median * 1e3

    existing = perm[rng.choice(n, WRITE_ROWS, replace=False)]
    rows = {"id": key_values(kind, existing), "x": np.zeros(WRITE_ROWS)}
    out["upsert_ms"] = _common.time_repeated(lambda: t.upsert(rows)).median * 1e3
    assert len(t) == n
    db.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--label", default="run", help="names the result (e.g. before / after)")
    ap.add_argument("--kinds", default="int,string")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="unidb-keys-"))
    try:
        rows = [run(kind, args.n, folder) for kind in args.kinds.split(",")]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for r in rows:
        r["label"] = args.label
    _common.print_table(rows, ["label", "kind", "n", "build_s", "build_bytes_per_row",
                               "build_rss_mb", "get1_us", "get1000_ms", "add_dup_ms",
                               "upsert_ms"], title=f"primary-key map ({args.label})")
    path = _common.write_results(f"keys-{args.label}", {"rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
