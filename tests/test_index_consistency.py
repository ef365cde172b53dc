"""Every index stays in step with the rows through random writes, checkpoints, clean reopens
and crash-reopens (snapshot + catch-up): text, sorted and partition indexes answer exactly
what a scan of the rows answers."""
from __future__ import annotations

import numpy as np
import pytest

import unidb

WORDS = ["alpha", "bravo", "charlie", "delta", "echo"]
# Many checkpoints, and an index snapshot saved at most of them.
OPTIONS = {"storage": {"memtable_flush_bytes": 8_000}, "indexes": {"save_min_changes": 40}}


def check(t, model: dict) -> None:
    assert len(t) == len(model)
    for w in WORDS:                                   # text index == scan of the rows
        got = {r["id"] for r in t.search(text=w).limit(1000).to_list()}
        assert got == {k for k, r in model.items() if w in r["body"].split()}, w
    for lo in (0, 30, 70):                            # sorted index drives exact answers
        want = {k for k, r in model.items() if r["score"] >= lo}
        rows = t.search(np.zeros(4, np.float32)).where(f"score >= {lo}").limit(1000).to_list()
        assert {r["id"] for r in rows} == want
    stats = t.index_stats("v")
    assert stats["live_vectors"] == len(model)
    every = stats["postings"]
    for k in list(model)[:20]:                        # partition index: every row findable
        hit = t.search(model[k]["v"]).params(nprobe=every).limit(1).to_list()[0]
        assert hit["_distance"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_indexes_follow_random_writes_reopens_and_crashes(tmp_path, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / "db"
    db = unidb.connect(path, options=OPTIONS)
    t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "body": unidb.Text(),
                              "score": unidb.Int64(), "v": unidb.Vector(4)})
    t.create_index("score")
    t.create_index("v", kind="partition", target_posting=10, max_posting=20, merge_threshold=3)
    model: dict[int, dict] = {}

    def row(k):
        return {"id": k, "body": " ".join(rng.choice(WORDS, 3)), "score": int(rng.integers(100)),
                "v": rng.standard_normal(4).astype(np.float32)}

    nxt = 0
    for step in range(150):
        op = rng.integers(6)
        if op <= 1:
            rows = [row(k) for k in range(nxt, nxt + 10)]
            nxt += 10
            t.add(rows)
            model.update({r["id"]: r for r in rows})
        elif op == 2 and model:
            rows = [row(int(k)) for k in rng.choice(list(model), min(5, len(model)), replace=False)]
            t.upsert(rows)
            model.update({r["id"]: r for r in rows})
        elif op == 3 and model:
            gone = [int(k) for k in rng.choice(list(model), min(4, len(model)), replace=False)]
            t.delete(ids=gone)
            for k in gone:
                model.pop(k)
        elif op == 4:
            t.update(where="score < 10", values={"body": "echo echo"})
            for r in model.values():
                if r["score"] < 10:
                    r["body"] = "echo echo"
        else:
            if rng.random() < 0.5:
                db.close()
            else:                                     # crash: no checkpoint, no index save
                t._close(checkpoint=False)
                db._folder.close()
            db = unidb.connect(path, options=OPTIONS)
            t = db.open_table("t")
        if step % 10 == 9:
            check(t, model)
    check(t, model)
    db.close()
