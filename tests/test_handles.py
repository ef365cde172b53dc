"""Database handles behave like SQLite's and Chroma's (issue #12, item 7).

A second `connect()` of a folder this process writes shares the database; closing one handle
leaves the others working; the writer lock goes with the last handle, closed or
garbage-collected; a closed handle and its tables raise ClosedError everywhere.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import unidb
from unidb.errors import ClosedError, ReadOnlyError, UnidbError, ValidationError

REPO = Path(__file__).resolve().parents[1]
DIM = 4

# Another process: try to open the database for writing; add a row if it can.
CHILD = """
import sys
import unidb
from unidb.errors import LockedError
try:
    db = unidb.connect(sys.argv[1])
except LockedError as e:
    print("LOCKED", e.pid)
    sys.exit(0)
t = db.open_table("t")
t.add([{"id": 10_000, "price": 1.0, "title": "from the child", "sv": {1: 1.0},
        "emb": [0.0, 0.0, 0.0, 1.0], "emb2": [0.0, 0.0, 1.0, 0.0]}])
print("OPEN", len(t))
db.close()
"""


def _other_process(path) -> str:
    """'LOCKED <pid>' or 'OPEN <rows after its add>' from a fresh Python process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def _schema():
    return {"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
            "title": unidb.Text(), "sv": unidb.SparseVector(),
            "emb": unidb.Vector(DIM), "emb2": unidb.Vector(DIM)}


def _rows(lo, hi):
    rng = np.random.default_rng(lo)
    words = ["red", "kettle", "blue", "lamp", "green", "mug"]
    return [{"id": i, "price": float(i), "title": " ".join(rng.choice(words, 3)),
             "sv": {int(i % 7): 1.0, 9: 0.5},
             "emb": rng.standard_normal(DIM).tolist(), "emb2": rng.standard_normal(DIM).tolist()}
            for i in range(lo, hi)]


def _make(path, n=50):
    db = unidb.connect(path)
    t = db.create_table("t", _schema())
    t.add(_rows(0, n))
    return db, t


Q = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)


def test_second_connect_in_process_shares_the_database(db_path):
    db1, t1 = _make(db_path)
    db2 = unidb.connect(db_path)                      # was: LockedError naming our own pid
    t2 = db2.open_table("t")
    assert len(t2) == 50
    t2.add(_rows(50, 60))                             # seen at once through the other handle
    assert len(t1) == 60 and t1.count(where="price >= 50") == 10
    assert t1.get(ids=[55]).column("id").to_pylist() == [55]
    t1.delete(ids=[0, 1])
    t1.update(where="id = 2", values={"title": "zebra"})
    assert len(t2) == 58 and t2.get(ids=[0]).num_rows == 0
    assert [r["id"] for r in t2.search(text="zebra").to_list()] == [2]
    with pytest.raises(ValidationError, match="already exists"):   # one primary key map
        t2.add(_rows(55, 56))
    assert t2.upsert(_rows(55, 57)) == {"inserted": 0, "updated": 2}
    assert len(t1) == 58
    near = t2.search(Q, column="emb").limit(58).to_list()
    assert sorted(r["id"] for r in near) == sorted(t1.to_arrow(["id"]).column("id").to_pylist())
    t3 = db2.create_table("u", {"id": unidb.Int64(primary_key=True)})
    t3.add([{"id": 1}])
    assert "u" in db1.table_names() and len(db1.open_table("u")) == 1
    db1.close()
    db2.close()


def test_closing_one_handle_leaves_the_other_working(db_path):
    db1, t1 = _make(db_path)
    db2 = unidb.connect(db_path)
    t2 = db2.open_table("t")
    t2.create_index("emb", kind="partition")
    db1.close()
    with pytest.raises(ClosedError):
        len(t1)
    t2.add(_rows(50, 70))
    assert len(t2) == 70
    assert len(t2.search(Q, column="emb").limit(5).to_list()) == 5
    assert t2.search(text="kettle").limit(3).to_list()
    assert t2.index_stats("emb")["kind"] == "partition"
    assert _other_process(db_path).startswith("LOCKED")   # db2 still holds the lock
    db2.close()
    assert _other_process(db_path) == "OPEN 71"            # the last close released it


def test_dropped_handle_releases_the_writer_lock(db_path):
    db, t = _make(db_path)
    t.create_index("emb", kind="partition")           # a rebalancer thread besides compaction
    t.search(Q, column="emb").where("price < 30").limit(5).to_list()
    t.search(text="red kettle").limit(5).to_list()
    assert _other_process(db_path) == f"LOCKED {os.getpid()}"
    del db, t                                         # no close(): a notebook moving on
    gc.collect()
    assert _other_process(db_path) == "OPEN 51"       # lock released, rows checkpointed or logged
    db = unidb.connect(db_path)
    assert len(db.open_table("t")) == 51
    db.close()


def test_running_a_connecting_cell_again_is_not_locked_out(db_path):
    _make(db_path)[0].close()
    cell = "db = unidb.connect(path)\nt = db.open_table('t')\nt.add(rows)\n"
    ns = {"unidb": unidb, "path": db_path}
    for i in range(3):                                # the same cell, run three times
        ns["rows"] = _rows(100 + i, 101 + i)
        exec(cell, ns)
    assert len(ns["t"]) == 53
    ns.clear()                                        # the kernel moves on
    gc.collect()
    assert _other_process(db_path) == "OPEN 54"


def test_with_closes_the_handle(db_path):
    with unidb.connect(db_path) as db:
        t = db.create_table("t", _schema())
        t.add(_rows(0, 5))
    with pytest.raises(ClosedError):
        db.table_names()
    with pytest.raises(ClosedError):
        t.search(Q, column="emb").to_list()
    assert _other_process(db_path) == "OPEN 6"
    db.close()                                        # closing again is harmless


def test_read_only_open_beside_the_in_process_writer(db_path):
    """A read-only handle is a reader of its own (as in another process) and keeps working
    whatever the writer handles do."""
    db, t = _make(db_path)
    ro = unidb.connect(db_path, read_only=True)
    rt = ro.open_table("t")
    assert len(rt) == 50
    t.add(_rows(50, 55))
    assert len(rt) == 55 and rt.get(ids=[54]).num_rows == 1
    assert len(rt.search(Q, column="emb").limit(3).to_list()) == 3
    with pytest.raises(ReadOnlyError):
        rt.add(_rows(60, 61))
    db2 = unidb.connect(db_path)                      # writers still share; the reader is apart
    assert db2.open_table("t") is not rt
    ro.close()
    assert len(t) == 55                               # closing the reader leaves the writer
    ro2 = unidb.connect(db_path, read_only=True)
    db.close()
    db2.close()
    assert len(ro2.open_table("t")) == 55             # and closing the writers the reader
    assert _other_process(db_path) == "OPEN 56"
    assert len(ro2.open_table("t")) == 56
    ro2.close()


def test_drop_table_closes_it_in_every_handle(db_path):
    db1, t1 = _make(db_path)
    db2 = unidb.connect(db_path)
    t2 = db2.open_table("t")
    db1.drop_table("t")
    with pytest.raises(ClosedError, match="dropped"):
        t2.add(_rows(100, 101))
    t2 = db2.create_table("t", _schema())
    assert len(t2) == 0 and len(db1.open_table("t")) == 0
    db1.close()
    db2.close()


def test_a_second_handle_must_not_change_durability(db_path):
    db = unidb.connect(db_path)
    with pytest.raises(UnidbError, match="durability"):
        unidb.connect(db_path, durability="async")
    db.close()
    unidb.connect(db_path, durability="async").close()   # once closed, any durability


def test_a_handle_collected_on_a_background_thread_is_released(db_path):
    """Garbage collection may run a handle's finalizer on one of the database's own
    threads, which closing joins; the release then happens on a thread of its own."""
    db, t = _make(db_path)
    engine = db._engine
    finalizer = db._finalizer
    worker = threading.Thread(target=finalizer, name="unidb-simulated-compactor")
    worker.start()
    worker.join(timeout=60)
    deadline = time.monotonic() + 60
    while not engine.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.closed
    assert _other_process(db_path) == "OPEN 51"
    db.close()                                        # already released: a no-op


# -- every public method of a closed handle, or of a table obtained from it -----------------
CLOSED_CASES = {
    "len": lambda db, t, b: len(t),
    "get": lambda db, t, b: t.get(ids=[1]),
    "count": lambda db, t, b: t.count(),
    "count_where": lambda db, t, b: t.count(where="price < 5"),
    "to_arrow": lambda db, t, b: t.to_arrow(),
    "to_pandas": lambda db, t, b: t.to_pandas(),
    "stats": lambda db, t, b: t.stats(),
    "add": lambda db, t, b: t.add(_rows(100, 101)),
    "upsert": lambda db, t, b: t.upsert(_rows(1, 2)),
    "delete_ids": lambda db, t, b: t.delete(ids=[1]),
    "delete_where": lambda db, t, b: t.delete(where="price < 5"),
    "update": lambda db, t, b: t.update(where="id = 1", values={"price": 2.0}),
    "search_vector": lambda db, t, b: t.search(Q, column="emb").limit(3).to_list(),
    "search_filtered": lambda db, t, b: t.search(Q, column="emb").where("price < 9").to_arrow(),
    "search_range": lambda db, t, b: t.search(Q, column="emb").distance_range(max=9).to_list(),
    "search_text": lambda db, t, b: t.search(text="red kettle").to_list(),
    "search_sparse": lambda db, t, b: t.search(sparse={1: 1.0}).to_list(),
    "search_hybrid": lambda db, t, b: t.search(Q, column="emb", text="red").fuse("rrf")
    .to_list(),
    "search_multivector": lambda db, t, b: t.search(vectors={"emb": Q, "emb2": Q}).to_list(),
    "explain": lambda db, t, b: t.search(Q, column="emb").explain(),
    "builder_made_before_close": lambda db, t, b: b.to_list(),
    "similarity_join": lambda db, t, b: unidb.similarity_join(t, t, on=("emb", "emb2"),
                                                              k=1).to_arrow(),
    "create_index": lambda db, t, b: t.create_index("price"),
    "drop_index": lambda db, t, b: t.drop_index("emb"),
    "index_stats": lambda db, t, b: t.index_stats("emb"),
    "list_indexes": lambda db, t, b: t.list_indexes(),
    "compact": lambda db, t, b: t.compact(),
    "flush": lambda db, t, b: t.flush(),
    "db.sql": lambda db, t, b: db.sql("SELECT id FROM t LIMIT 1"),
    "db.open_table": lambda db, t, b: db.open_table("t"),
    "db[name]": lambda db, t, b: db["t"],
    "db.table_names": lambda db, t, b: db.table_names(),
    "name in db": lambda db, t, b: "t" in db,
    "db.create_table": lambda db, t, b: db.create_table("v", {"id": unidb.Int64(primary_key=True)}),
    "db.drop_table": lambda db, t, b: db.drop_table("t"),
    "db.backup": lambda db, t, b: db.backup(db.path.parent / "backup"),
}


@pytest.mark.parametrize("other_handle", [False, True], ids=["last", "shared"])
@pytest.mark.parametrize("case", sorted(CLOSED_CASES))
def test_every_method_of_a_closed_handle_raises_closed_error(db_path, case, other_handle):
    """Whether the database is closed too (last handle) or still open through another."""
    db, t = _make(db_path, n=20)
    t.create_index("emb", kind="partition")
    builder = t.search(Q, column="emb").limit(3)
    other = unidb.connect(db_path) if other_handle else None
    db.close()
    with pytest.raises(ClosedError, match="closed"):
        CLOSED_CASES[case](db, t, builder)
    if other is not None:                             # nothing happened to the database
        ot = other.open_table("t")
        assert len(ot) == 20 and ot.index_stats("emb")["kind"] == "partition"
        other.close()
    assert "closed" in repr(db) and "closed" in repr(t)


def test_remote_client_after_close_raises_closed_error(tmp_path):
    """The remote client keeps the embedded contract: a closed handle raises ClosedError."""
    from fastapi.testclient import TestClient

    from unidb.client import RemoteDatabase
    from unidb.server.app import ServerConfig, create_app
    path = tmp_path / "db"
    db = unidb.connect(path)
    db.create_table("t", {"id": unidb.Int64(primary_key=True)})
    db.close()
    app = create_app(path, ServerConfig(auth=False, access_log=False))
    with TestClient(app) as client:
        remote = RemoteDatabase("http://testserver", transport=client._transport)
        t = remote.open_table("t")
        remote.close()
        with pytest.raises(unidb.errors.ClosedError):
            len(t)
        with pytest.raises(unidb.errors.ClosedError):
            remote.table_names()
