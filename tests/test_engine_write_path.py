"""The engine owns a table's write path (unidb/engine/table.py): validate -> log -> apply ->
feed indexes -> publish, under one lock it owns, and storage never calls back up.

Pinned here: the order (a write is in the log while its indexes are fed, and no read sees it
until they hold it, also with concurrent readers); what a failing index feed does (the write
stands, the index is rebuilt from the rows, or reported broken and never answers with rows
missing); what a failing in-memory apply does; and that no code above storage reaches into
the store's lock or private state, or registers a callback with it.
"""
from __future__ import annotations

import ast
import threading
from pathlib import Path

import numpy as np
import pytest

import unidb
from unidb.engine.indexes import IndexSet
from unidb.errors import UnidbError
from unidb.storage.table_store import TableStore
from unidb.storage.wal import read_wal

DIM = 8
ROOT = Path(__file__).resolve().parent.parent / "unidb"
SCHEMA = {"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
          "title": unidb.Text(), "emb": unidb.Vector(DIM)}
WORDS = ["red", "blue", "kettle", "lamp", "chair", "green"]


def rows(lo: int, hi: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed + lo)
    return [{"id": i, "price": float(i), "title": f"common {WORDS[i % len(WORDS)]} w{i}",
             "emb": rng.standard_normal(DIM).astype(np.float32).tolist()}
            for i in range(lo, hi)]


class Wrapped:
    """An index implementation whose `add` runs `hook` first (to fail, or to block)."""

    def __init__(self, impl, hook):
        self._impl = impl
        self._hook = hook

    def add(self, *args, **kwargs):
        self._hook()
        return self._impl.add(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._impl, name)

    def __len__(self):
        return len(self._impl)


def wrap_index(t, column: str, hook) -> None:
    t._indexes.get(column).impl = Wrapped(t._indexes.get(column).impl, hook)


def text_ids(t, word: str) -> set[int]:
    return {r["id"] for r in t.search(text=word).limit(10_000).select(["id"]).to_list()}


def nearest_ids(t, q: np.ndarray, k: int = 5) -> list[int]:
    return [r["id"] for r in t.search(q, column="emb").limit(k).select(["id"]).to_list()]


def exact_nearest(t, q: np.ndarray, k: int = 5) -> list[int]:
    data = t.to_arrow(columns=["id", "emb"])
    emb = np.stack(data.column("emb").to_numpy(zero_copy_only=False)).astype(np.float32)
    order = np.argsort(((emb - q) ** 2).sum(axis=1), kind="stable")[:k]
    return data.column("id").to_numpy()[order].tolist()


@pytest.fixture
def table(db):
    t = db.create_table("t", SCHEMA)
    t.add(rows(0, 200))
    t.create_index("emb", kind="partition")
    t.create_index("price")
    return t


# -- order and ownership --------------------------------------------------------------------
def test_a_write_is_logged_before_its_indexes_are_fed_and_published_after(table):
    """While the indexes take a write, the record is already in the log, the engine's one
    lock is held (the very lock the store serialises on), and reads still show the table
    without the write."""
    t = table
    wal = t._store.folder / t._store.manifest.wal
    records_before = len(read_wal(wal, repair=False)[1])
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def hook():
        seen["records"] = len(read_wal(wal, repair=False)[1])
        seen["lock_held"] = t._engine._lock._is_owned()
        seen["same_lock"] = t._store._lock is t._engine._lock
        entered.set()
        assert release.wait(60)

    wrap_index(t, "title", hook)
    writer = threading.Thread(target=t.add, args=(rows(200, 210),))
    writer.start()
    try:
        assert entered.wait(60)
        assert seen == {"records": records_before + 1, "lock_held": True, "same_lock": True}
        # Not yet published: no read path shows the new rows.
        assert len(t) == 200 and t.count() == 200
        assert t.get([205]).num_rows == 0
        assert t._state().next_rowid == 200
        assert 205 not in set(t.to_arrow(columns=["id"]).column("id").to_pylist())
    finally:
        release.set()
        writer.join(60)
    assert len(t) == 210 and t.get([205]).num_rows == 1
    assert 205 in text_ids(t, "w205")


def test_concurrent_readers_never_see_rows_an_index_lacks(table):
    """Readers take snapshots while a writer adds and deletes (with a feed slowed to widen
    any window): every live row of every snapshot is in the text and sorted indexes. (An
    index may run ahead of a snapshot: a row it lacks must then be one a later write deleted.)"""
    t = table
    wrap_index(t, "title", lambda: threading.Event().wait(0.002))
    stop = threading.Event()
    errors: list[BaseException] = []
    lacked: set[int] = set()
    checks = [0]

    def writer():
        try:
            for i in range(1, 30):
                t.add(rows(200 + 20 * i, 220 + 20 * i))
                if i % 4 == 0:
                    t.delete(ids=list(range(200 + 20 * (i - 1), 205 + 20 * (i - 1))))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            stop.set()

    def reader():
        try:
            while not stop.is_set():
                state = t._state()
                live = np.concatenate([p.row_ids[state.live_mask(p)] for p in state.parts
                                       if p.num_rows])
                in_text = np.asarray(t._indexes.match_mask("title", "common", live), bool)
                h = t._indexes.get("price")
                with h.lock:
                    in_sorted = h.impl.range_rows()
                lacked.update(live[~in_text].tolist())
                lacked.update(np.setdiff1d(live, in_sorted).tolist())
                checks[0] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert checks[0] > 0
    final = t._state()
    assert len(t) == 200 + 29 * 20 - 7 * 5
    published_early = sorted(r for r in lacked if r not in final.tombstones)
    assert not published_early, f"rows {published_early[:10]} were readable before indexed"


# -- a failing index feed -------------------------------------------------------------------
def test_an_index_that_fails_a_write_is_rebuilt_and_the_write_stands(db_path, table):
    t = table
    failures = [1]

    def fail_once():
        if failures[0]:
            failures[0] -= 1
            raise MemoryError("simulated failure inside the text index")

    wrap_index(t, "title", fail_once)
    assert t.add(rows(200, 220)) == 20                 # durable, so it returns
    assert failures == [0]                             # the failure did happen
    assert len(t) == 220 and t.get([210]).num_rows == 1
    assert text_ids(t, "w210") == {210}                # the rebuilt index holds the write
    assert len(text_ids(t, "common")) == 220
    assert t.stats()["broken_indexes"] == {}
    assert t.index_stats("title")["broken"] is None
    t.add(rows(220, 230))                              # the new index takes later writes
    assert len(text_ids(t, "common")) == 230
    # A crash right after: the log holds the write; the reopened index has it too.
    t._close(checkpoint=False)
    t._db._folder.close()
    db = unidb.connect(db_path)
    t = db.open_table("t")
    assert len(t) == 230 and len(text_ids(t, "common")) == 230
    db.close()


def test_an_index_that_cannot_be_rebuilt_is_reported_and_never_answers_short(
        db_path, monkeypatch):
    # A broken index is retried at every write (not every 5 s) so the test can watch it heal.
    db = unidb.connect(db_path, options={"indexes": {"rebuild_retry_seconds": 0.0}})
    t = db.create_table("t", SCHEMA)
    t.add(rows(0, 200))
    t.create_index("emb", kind="partition")
    t.create_index("price")
    build = IndexSet._build
    cause = {"on": True}

    def failing_build(self, column, kind, options, state):
        if cause["on"] and column in ("title", "emb"):
            raise MemoryError(f"simulated: no memory to rebuild {column}")
        return build(self, column, kind, options, state)

    def fail():
        raise MemoryError("simulated failure inside the index")

    monkeypatch.setattr(IndexSet, "_build", failing_build)
    wrap_index(t, "title", fail)
    wrap_index(t, "emb", fail)
    assert t.add(rows(200, 220)) == 20                 # durable, so it still returns
    assert len(t) == 220 and t.get([215]).num_rows == 1
    broken = t.stats()["broken_indexes"]
    assert set(broken) == {"title", "emb"} and "no memory" in broken["title"]
    assert "no memory" in t.index_stats("emb")["broken"]
    assert set(t.list_indexes()) == {"title", "emb", "price"}      # still defined
    # A text search has no exact fallback: it says so instead of answering without rows.
    with pytest.raises(UnidbError, match="out of service"):
        t.search(text="w215").to_list()
    with pytest.raises(UnidbError, match="out of service"):
        t.count(where="MATCH(title, 'w215')")
    # A vector search scans exactly instead: the new rows are found.
    q = np.asarray(t.get([215], ["emb"]).column("emb")[0].as_py(), np.float32)
    assert nearest_ids(t, q) == exact_nearest(t, q) and nearest_ids(t, q)[0] == 215
    # The cause clears: the next write rebuilds both from the rows and they are back.
    cause["on"] = False
    t.add(rows(220, 225))
    assert t.stats()["broken_indexes"] == {}
    assert text_ids(t, "w215") == {215} and len(text_ids(t, "common")) == 225
    assert t._indexes.vector_index("emb") is not None
    assert nearest_ids(t, q)[0] == 215
    db.close()


def test_a_broken_index_is_whole_again_after_a_reopen(db_path, table, monkeypatch):
    t = table
    monkeypatch.setattr(IndexSet, "_build", lambda *a, **k: (_ for _ in ()).throw(
        MemoryError("simulated: rebuild fails")))
    wrap_index(t, "title", lambda: (_ for _ in ()).throw(MemoryError("simulated feed")))
    t.add(rows(200, 240))
    assert set(t.stats()["broken_indexes"]) == {"title"}
    monkeypatch.undo()
    t._db.close()                                       # checkpoint: the broken index is skipped
    db = unidb.connect(db_path)
    t = db.open_table("t")
    assert t.stats()["broken_indexes"] == {}
    assert len(text_ids(t, "common")) == 240 and text_ids(t, "w230") == {230}
    db.close()


def test_an_interrupt_inside_an_index_feed_leaves_no_index_or_key_short(table):
    """Ctrl-C while an index takes a write: the write is durable, so it is published, the
    index it hit is out of service (not silently short), and the key map knows the keys."""
    t = table

    def interrupt():
        raise KeyboardInterrupt

    wrap_index(t, "title", interrupt)
    with pytest.raises(KeyboardInterrupt):
        t.add(rows(200, 210))
    assert len(t) == 210 and t.get([205]).num_rows == 1
    assert set(t.stats()["broken_indexes"]) == {"title"}
    with pytest.raises(UnidbError, match="out of service"):
        t.search(text="common").to_list()
    with pytest.raises(unidb.ValidationError, match="already exists"):
        t.add(rows(205, 206))


# -- a failing in-memory apply --------------------------------------------------------------
def test_a_logged_write_that_fails_to_apply_stops_writes_until_reopened(db_path, table,
                                                                         monkeypatch):
    t = table

    def broken_append(self, batch):
        raise MemoryError("simulated: no memory for the in-memory table")

    monkeypatch.setattr(TableStore, "_append_mem", broken_append)
    with pytest.raises(UnidbError, match="is in the log .* reopened"):
        t.add(rows(200, 210))
    monkeypatch.undo()
    assert len(t) == 200                                # never published
    assert not t._store.health()["writable"]
    with pytest.raises(UnidbError, match="reopened"):   # another write would log past it
        t.add(rows(300, 301))
    with pytest.raises(UnidbError):
        t._db.close()                                   # no checkpoint of that memory table
    db = unidb.connect(db_path)
    t = db.open_table("t")
    assert len(t) == 210 and text_ids(t, "w205") == {205}   # the log replayed it
    t.add(rows(210, 220))
    assert len(t) == 220
    db.close()


# -- storage never calls up; nothing above storage reaches into the store ------------------
def test_table_store_has_no_callback_api_and_its_write_steps_need_the_lock(tmp_path):
    store = TableStore.create(tmp_path / "t", unidb.Schema(SCHEMA).to_json())
    try:
        for name in ("listeners", "checkpoint_listeners", "commit"):
            assert not hasattr(store, name), name
        callables = [k for k, v in vars(store).items()
                     if callable(v) and not hasattr(v, "acquire")]
        assert not callables, f"TableStore holds callables {callables}"
        with pytest.raises(RuntimeError, match="write lock"):
            store.log(np.array([1]), None)
        assert len(read_wal(store.folder / store.manifest.wal, repair=False)[1]) == 0
    finally:
        store.close()


def _private_names() -> set[str]:
    """TableStore's private members: its methods and the attributes of an instance."""
    names = set(vars(TableStore)) | set(vars(TableStore("/nonexistent", True, "sync")))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def store_breaches(root: Path, files: list[Path]) -> list[str]:
    """`x._lock` on anything but `self`, and private TableStore members reached through a
    store (`..._store._state`, `store._wal`), in `files`."""
    private = _private_names()
    found = []
    for path in files:
        where = path.relative_to(root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value
            if node.attr == "_lock" and not (isinstance(base, ast.Name) and base.id == "self"):
                found.append(f"{where}:{node.lineno} .{node.attr}")
                continue
            base_name = base.attr if isinstance(base, ast.Attribute) else \
                base.id if isinstance(base, ast.Name) else None
            if base_name in ("store", "_store") and node.attr in private:
                found.append(f"{where}:{node.lineno} {base_name}.{node.attr}")
    return found


def test_nothing_above_storage_touches_the_stores_lock_or_private_state():
    files = [p for p in ROOT.rglob("*.py") if "storage" not in p.relative_to(ROOT).parts]
    assert len(files) > 50 and ROOT / "engine" / "table.py" in files
    found = store_breaches(ROOT, files)
    assert not found, "code above storage reaches into TableStore: " + ", ".join(found)


def test_the_store_guard_catches_what_the_api_used_to_do(tmp_path):
    (tmp_path / "old.py").write_text(
        "def add(core, batch):\n    with core._store._lock:\n        core._store.commit(batch)\n"
        "def save(self):\n    with self._store._lock:\n        return self._store._state\n"
        "def fine(self, t):\n    with self._lock:\n        return t._state(), self._store.state\n")
    found = store_breaches(tmp_path, [tmp_path / "old.py"])
    assert found == ["old.py:2 ._lock", "old.py:5 ._lock", "old.py:6 _store._state"]
