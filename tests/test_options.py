"""Engine options (unidb/options.py): validation names the bad option; values round-trip."""
import math

import pytest

from unidb.errors import ValidationError
from unidb.options import DEFAULT, IndexOptions, Options, PlannerOptions, StorageOptions


def test_defaults_and_derived_sizes():
    o = Options.of(None)
    assert o is DEFAULT
    assert o.storage.small_bytes == o.storage.memtable_flush_bytes // 4
    assert o.storage.target_bytes == o.storage.memtable_flush_bytes * 4
    s = StorageOptions(memtable_flush_bytes=1000, compact_small_bytes=10)
    assert (s.small_bytes, s.target_bytes) == (10, 4000)


def test_dict_and_objects_round_trip():
    o = Options.of({"storage": {"memtable_flush_bytes": 4096},
                    "indexes": {"text_topk": "maxscore", "partition": {"replicas": 2}},
                    "planner": {"exact_max_cells": 0}})
    assert o.storage.memtable_flush_bytes == 4096
    assert o.indexes.partition["replicas"] == 2
    assert Options.of(o.to_dict()) == o
    assert Options.of(o) is o
    same = Options(storage=StorageOptions(memtable_flush_bytes=4096),
                   indexes=IndexOptions(text_topk="maxscore", partition={"replicas": 2}),
                   planner=PlannerOptions(exact_max_cells=0))
    assert same == o


def test_options_are_immutable():
    o = Options.of({"indexes": {"partition": {"replicas": 2}}})
    with pytest.raises(AttributeError):
        o.storage.memtable_flush_bytes = 1
    with pytest.raises(TypeError):
        o.indexes.partition["replicas"] = 3


@pytest.mark.parametrize("bad, words", [
    ({"storage": {"memtable_flush_bytes": 0}}, "storage.memtable_flush_bytes must be in"),
    ({"storage": {"memtable_flush_bytes": True}}, "must be a number"),
    ({"storage": {"memtable_flush_bytes": 1.5}}, "whole number"),
    ({"storage": {"compact_dead_ratio": math.nan}}, "must be finite"),
    ({"storage": {"compact_dead_ratio": 2}}, "compact_dead_ratio must be in"),
    ({"storage": {"compact_small_bytes": 100, "compact_target_bytes": 10}},
     "compact_target_bytes (10) must be at least compact_small_bytes (100)"),
    ({"storag": {}}, "unknown options section 'storag'"),
    ({"planner": {"bogus": 1}}, "unknown option planner.bogus"),
    ({"indexes": {"text_topk": "fast"}}, "text_topk must be one of"),
    ({"indexes": {"partition": ["replicas"]}}, "partition must be a dict"),
    ({"planner": {"budget_fraction": "0.3"}}, "must be a number"),
    ({"storage": 5}, "options storage must be a StorageOptions or a dict"),
    (7, "options must be a unidb.Options or a dict"),
])
def test_bad_options_name_the_problem(bad, words):
    with pytest.raises(ValidationError) as e:
        Options.of(bad)
    assert words in str(e.value)


# -- options reach the engine through connect() ------------------------------------------------
import numpy as np  # noqa: E402

import unidb  # noqa: E402
from unidb.errors import UnidbError  # noqa: E402

DIM = 8


def _table(db, n=2_000, seed=0):
    rng = np.random.default_rng(seed)
    t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "u": unidb.Int64(),
                              "v": unidb.Vector(DIM)})
    t.add({"id": np.arange(n), "u": np.arange(n) % 100,
           "v": rng.standard_normal((n, DIM)).astype(np.float32)})
    return t


def test_storage_options_set_the_flush_size(tmp_path):
    small = unidb.connect(tmp_path / "small", options={"storage": {"memtable_flush_bytes": 4096}})
    _table(small)
    default = unidb.connect(tmp_path / "default")
    _table(default)
    try:
        assert small.open_table("t").stats()["segments"] > 0        # checkpointed on its own
        assert default.open_table("t").stats()["segments"] == 0     # 64 MiB not reached
    finally:
        small.close()
        default.close()


def test_handles_share_options_and_must_agree(tmp_path):
    opts = {"storage": {"memtable_flush_bytes": 4096}}
    a = unidb.connect(tmp_path / "db", options=opts)
    try:
        b = unidb.connect(tmp_path / "db", options=unidb.Options.of(opts))   # equal: shared
        b.close()
        with pytest.raises(UnidbError, match="storage.memtable_flush_bytes: 4096 / 67108864"):
            unidb.connect(tmp_path / "db")
    finally:
        a.close()
    unidb.connect(tmp_path / "db").close()         # the last handle closed: any options again


def test_options_are_refused_for_a_server_url():
    with pytest.raises(ValidationError, match="embedded database"):
        unidb.connect("http://127.0.0.1:9", options={"storage": {}})


def test_bad_options_leave_nothing_on_disk(tmp_path):
    with pytest.raises(ValidationError, match="memtable_flush_bytes"):
        unidb.connect(tmp_path / "db", options={"storage": {"memtable_flush_bytes": -1}})
    assert not (tmp_path / "db").exists()


def test_partition_defaults_apply_at_creation_and_stay_with_the_index(tmp_path):
    opts = {"indexes": {"partition": {"replicas": 2, "max_partitions": 7}}}
    db = unidb.connect(tmp_path / "db", options=opts)
    t = _table(db)
    t.create_index("v", kind="partition", max_partitions=9)     # the call's own option wins
    assert t.list_indexes()["v"]["options"] == {"replicas": 2, "max_partitions": 9}
    db.close()
    db = unidb.connect(tmp_path / "db")                          # other defaults: same index
    assert db.open_table("t").list_indexes()["v"]["options"] == {"replicas": 2,
                                                                   "max_partitions": 9}
    db.close()
    bad = unidb.connect(tmp_path / "bad", options={"indexes": {"partition": {"replicas": 0}}})
    t = _table(bad)
    with pytest.raises(Exception, match="replicas"):
        t.create_index("v", kind="partition")
    bad.close()


@pytest.mark.parametrize("planner, plan", [
    ({"exact_max_cells": 0}, "index-postfilter"),
    ({"exact_max_cells": 0, "postfilter_min_selectivity": 1.0}, "index-stream"),
    ({"exact_max_cells": 1 << 40}, "exact-filtered")])
def test_planner_options_choose_the_plan(tmp_path, planner, plan):
    db = unidb.connect(tmp_path / "db", options={"planner": planner})
    t = _table(db)
    t.create_index("v", kind="partition")
    q = np.ones(DIM, np.float32)
    s = t.search(q).where("u < 50").limit(10)
    assert s.explain().plan == plan
    got = [r["id"] for r in t.search(q).where("u < 50").limit(10).params(nprobe=10_000).to_list()]
    exact = [r["id"] for r in t.search(q).where("u < 50").limit(10).params(exact=True).to_list()]
    assert got == exact
    db.close()


def test_text_index_options_reach_the_table_index(tmp_path):
    words = ["red", "green", "blue", "lamp", "chair", "kettle"]
    rng = np.random.default_rng(1)
    docs = [" ".join(rng.choice(words, 5)) for _ in range(300)]

    def run(options):
        db = unidb.connect(tmp_path / str(len(list(tmp_path.iterdir()))), options=options)
        t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "body": unidb.Text()})
        for i in range(0, 300, 10):                       # many small writes
            t.add({"id": list(range(i, i + 10)), "body": docs[i:i + 10]})
        hits = [[(r["id"], r["_score"]) for r in t.search(text=w).limit(20).to_list()]
                for w in words]
        segments = t.index_stats("body")["segments"]
        db.close()
        return hits, segments

    base, base_segments = run(None)
    small, small_segments = run({"indexes": {"text_buffer_docs": 20, "text_max_segments": 50}})
    assert base_segments <= 1 < small_segments            # sealed every 20 docs, never merged
    assert small == base
    for topk in ("maxscore", "exhaustive"):               # forced algorithms: same answers
        assert run({"indexes": {"text_topk": topk}})[0] == base
