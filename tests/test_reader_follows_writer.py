"""Read-only processes follow a writer process through every access path.

A writer runs in a real subprocess (tests/reader_writer_child.py); the reader is this process
(`unidb.connect(path, read_only=True)`). Every answer the reader gives through an index —
partition (full probe), sorted (scalar-driven plan), text (BM25), sparse, MATCH filters and
hybrid fusion — must equal exact evaluation (numpy brute force, or an index built from scratch)
on the very snapshot the query ran on, while the writer adds, deletes, updates, checkpoints,
compacts, rebalances and re-saves its indexes, and creates or drops indexes.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import unidb
from unidb.engine.indexes import index_folder
from unidb.index.sparse import Analyzer, TextIndex

import reader_writer_child as child

CHILD = Path(__file__).with_name("reader_writer_child.py")
ALL = 10**6                           # nprobe: every partition (exact)
BIG = 5000                            # a limit above any number of matching rows here
COLS = ["id", "num", "body", "sp", "emb"]


# -- the writer process ------------------------------------------------------------------------
class Writer:
    """The child in "serve" mode: each call returns after the write returned in the child."""

    def __init__(self, path: Path):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), str(CHILD.parent),
             os.environ.get("PYTHONPATH", "")]))
        self.p = subprocess.Popen([sys.executable, str(CHILD), str(path), "serve"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=env)
        assert self._line() == "READY"

    def _line(self) -> str:
        line = self.p.stdout.readline().strip()
        if not line:
            raise AssertionError(f"writer exited with {self.p.wait(30)}")
        return line

    def __call__(self, op: str, **kw):
        self.p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.p.stdin.flush()
        line = self._line()
        assert line.startswith("OK "), line
        return json.loads(line[3:])

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.p.stdin.flush()
            assert self._line() == "BYE"
        self.p.wait(30)


@pytest.fixture
def writer(tmp_path):
    w = Writer(tmp_path / "db.unidb")
    yield w
    w.close()


def reader(path: Path):
    db = unidb.connect(path, read_only=True)
    return db, db.open_table("t")


# -- exact evaluation ----------------------------------------------------------------------
def live_rows(state) -> pa.Table:
    """Every live row of a snapshot (with _rowid)."""
    pieces = [p.table.filter(pa.array(state.live_mask(p))) for p in state.parts if p.num_rows]
    return pa.concat_tables(pieces).select(COLS + ["_rowid"])


class Truth:
    """Brute-force answers over one set of rows."""

    def __init__(self, rows: pa.Table):
        self.rows = rows
        self.ids = rows.column("id").to_numpy()
        self.num = rows.column("num").to_numpy()
        self.emb = np.asarray(rows.column("emb").to_pylist(), dtype=np.float64).reshape(-1, child.DIM)
        self.body = rows.column("body").to_pylist()
        self.tokens = [set(re.findall(r"\w+", b.lower())) for b in self.body]
        self.sp = rows.column("sp").to_pylist()
        self._text = None
        self._lock = threading.Lock()

    def dist(self, q) -> np.ndarray:
        return np.sqrt(((self.emb - np.asarray(q, np.float64)) ** 2).sum(1))

    def has(self, word) -> np.ndarray:
        return np.array([word in tk for tk in self.tokens], dtype=bool)

    def text_scores(self, word) -> dict:
        """BM25 scores from an index built from scratch over exactly these rows."""
        with self._lock:                      # reader threads share truths
            if self._text is None:
                idx = TextIndex(Analyzer.named("standard"))
                idx.add(np.arange(len(self.ids)), self.body)
                self._text = idx
        pos, scores = self._text.score_all(word)
        return dict(zip(self.ids[pos].tolist(), scores.tolist()))

    def sparse_scores(self, qi, qv) -> dict:
        q = dict(zip(qi, qv))
        out = {}
        for key, v in zip(self.ids.tolist(), self.sp):
            if v is not None and set(v["indices"]) & set(q):
                out[key] = sum(q.get(i, 0.0) * x for i, x in zip(v["indices"], v["values"]))
        return out


def check_topk(got_ids, got_d, cand_ids, cand_d, k, what):
    """An exact top-k (ties at the k-th distance may be broken either way)."""
    n = min(k, len(cand_ids))
    assert len(got_ids) == n, f"{what}: {len(got_ids)} rows, expected {n}"
    assert len(set(got_ids.tolist())) == n, f"{what}: repeated rows"
    true = dict(zip(cand_ids.tolist(), cand_d.tolist()))
    missing = [i for i in got_ids.tolist() if i not in true]
    assert not missing, f"{what}: rows {missing[:5]} are not eligible (deleted or filtered out)"
    td = np.array([true[i] for i in got_ids.tolist()])
    np.testing.assert_allclose(got_d, td, rtol=1e-4, atol=1e-4, err_msg=what)
    if n:
        kth = np.sort(cand_d)[n - 1]
        assert td.max() <= kth + 1e-4, f"{what}: not the nearest rows"


def check_scores(got_ids, got_s, expected: dict, what):
    assert sorted(got_ids.tolist()) == sorted(expected), \
        f"{what}: {sorted(set(got_ids.tolist()) ^ set(expected))[:10]} differ"
    np.testing.assert_allclose(got_s, [expected[i] for i in got_ids.tolist()], rtol=1e-4,
                               atol=1e-5, err_msg=what)
    assert np.all(np.diff(got_s) <= 1e-9), f"{what}: not best first"


# -- running a query on the reader -----------------------------------------------------------
def run(b, value_col, quiet_truth=None):
    """(primary keys, values, truth): through the public API with the caller's truth when the
    writer is idle, else through the executor with the truth of the snapshot it ran on."""
    if quiet_truth is not None:
        out = b.to_arrow()
        return out.column("id").to_numpy(), out.column(value_col).to_numpy(), quiet_truth
    results, single, vcol, state = b._run()
    assert single and vcol == value_col
    rid, vals = results[0]
    keys = state.take(rid, ["id"]).column(0).to_numpy() if len(rid) else np.zeros(0, np.int64)
    return keys, np.asarray(vals), truth_of(state)


_truths: dict = {}
_truth_lock = threading.Lock()


def truth_of(state) -> Truth:
    with _truth_lock:
        hit = _truths.get(id(state))
        if hit is not None and hit[0] is state:
            return hit[1]
    tr = Truth(live_rows(state))
    with _truth_lock:
        if len(_truths) > 64:
            _truths.clear()
        _truths[id(state)] = (state, tr)
    return tr


def verify(t, rng, quiet: bool, kinds=("vector", "sorted", "text", "sparse", "match", "hybrid")):
    """One query of each kind on the reader `t`, each compared with exact evaluation."""
    truth = Truth(t.to_arrow(columns=COLS + ["_rowid"])) if quiet else None
    q = rng.standard_normal(child.DIM)
    k = int(rng.integers(1, 30))
    word = str(rng.choice(child.WORDS))
    if "vector" in kinds:
        ids, d, tr = run(t.search(q).limit(k).params(nprobe=ALL), "_distance", truth)
        check_topk(ids, d, tr.ids, tr.dist(q), k, "partition full probe")
    if "sorted" in kinds:
        lo = float(rng.uniform(0, 900))
        b = t.search(q).where(f"num >= {lo} AND num < {lo + 60}").limit(k)
        if "num" in t.list_indexes():
            b = b.params(force_plan="scalar")
        ids, d, tr = run(b, "_distance", truth)
        sel = (tr.num >= lo) & (tr.num < lo + 60)
        check_topk(ids, d, tr.ids[sel], tr.dist(q)[sel], k, "sorted index range")
    if "text" in kinds:
        ids, s, tr = run(t.search(text=word).limit(BIG), "_score", truth)
        assert set(tr.text_scores(word)) == set(tr.ids[tr.has(word)].tolist())
        check_scores(ids, s, tr.text_scores(word), f"text {word!r}")
    if "sparse" in kinds:
        qi = sorted(rng.choice(child.SPARSE_DIMS, 2, replace=False).tolist())
        qv = [1.0, 0.5]
        ids, s, tr = run(t.search(sparse={"indices": qi, "values": qv}).limit(BIG), "_score",
                         truth)
        check_scores(ids, s, tr.sparse_scores(qi, qv), f"sparse {qi}")
    if "match" in kinds:
        ids, d, tr = run(t.search(q).where(f"MATCH(body, '{word}')").limit(k), "_distance",
                         truth)
        sel = tr.has(word)
        check_topk(ids, d, tr.ids[sel], tr.dist(q)[sel], k, f"MATCH {word!r}")
        if quiet:
            assert t.count(where=f"MATCH(body, '{word}')") == int(sel.sum())
            got = t.to_arrow(columns=["id"], where=f"MATCH(body, '{word}')").column("id")
            assert sorted(got.to_pylist()) == sorted(tr.ids[sel].tolist())
    if "hybrid" in kinds:
        # Fusion over exact inputs on the same snapshot: the flat scan's distances (the very
        # float32 values the engine fuses, so near-ties rank alike) and BM25 from scratch.
        from unidb.index.flat.exact import all_distances
        from unidb.index.sparse.fusion import ScoresSource, exact_fused_topk
        b = t.search(q, text=word).limit(k)
        results, _, _, state = b._run()
        rid, s = results[0]
        tr = truth_of(state)
        rowids = tr.rows.column("_rowid").to_numpy()
        did, dd = all_distances(state, "emb", "l2", q.astype(np.float32), None)
        ts = tr.text_scores(word)
        key_rowid = dict(zip(tr.ids.tolist(), rowids.tolist()))
        text = ScoresSource(np.array([key_rowid[key] for key in ts], np.int64),
                            np.array(list(ts.values())))
        want, fused = exact_fused_topk([ScoresSource(did, -dd), text], "rrf", k=60.0, limit=k)
        assert rid.tolist() == want.tolist(), "hybrid"
        np.testing.assert_allclose(s, fused, rtol=1e-9, err_msg="hybrid")


# -- unit-ish: each kind of writer change, checked when the writer is idle -------------------
def test_reader_follows_adds_deletes_updates_checkpoints_and_compaction(writer, tmp_path):
    path = tmp_path / "db.unidb"
    rng = np.random.default_rng(1)
    writer("add", start=0, n=600, seed=1)
    writer("create_index", column="emb", kind="partition", options=child.PARTITION_OPTIONS)
    writer("create_index", column="num", kind="sorted")
    db, t = reader(path)
    first_segments = writer("segments")
    try:
        verify(t, rng, quiet=True)
        # new rows, one of them with a word nobody else has
        writer("add", start=600, n=300, seed=2)
        writer("add", start=900, n=1, seed=3)
        writer("update", where="id = 900", values={"body": "aardvark"})
        assert t.get([900]).column("body").to_pylist() == ["aardvark"]
        assert [r["id"] for r in t.search(text="aardvark").to_list()] == [900]
        assert t.count(where="MATCH(body, 'aardvark')") == 1
        verify(t, rng, quiet=True)
        # deletes: the reader must stop returning them through every index
        writer("delete", ids=list(range(0, 600, 2)))
        verify(t, rng, quiet=True)
        hits = t.search(t.get([1]).column("emb").to_pylist()[0]).limit(1) \
            .params(nprobe=ALL).to_list()
        assert hits[0]["id"] == 1
        # updates and upserts (delete + insert under new row ids)
        writer("update", where="num < 300", values={"body": "zz updated", "num": 1.5})
        writer("upsert", start=500, n=200, seed=4)
        verify(t, rng, quiet=True)
        # checkpoint + compaction: dead rows leave the segments
        writer("compact")                      # (the background compactor may have done it)
        assert writer("segments") != first_segments
        for _ in range(3):
            verify(t, rng, quiet=True)
        stored = sum(p.num_rows for p in t._store.state.parts)
        assert stored < 901 + 250 + 200, "compaction dropped no deleted row"
        writer("delete", where="num > 800")
        writer("flush")
        writer("compact")
        for _ in range(3):
            verify(t, rng, quiet=True)
        # a reader opened now (loads the saved snapshots) agrees with the long-lived one
        db2, t2 = reader(path)
        try:
            for seed in range(3):
                verify(t2, np.random.default_rng(seed), quiet=True)
                a = t.search(np.ones(child.DIM), text="w3").limit(20).to_list()
                b = t2.search(np.ones(child.DIM), text="w3").limit(20).to_list()
                assert [r["id"] for r in a] == [r["id"] for r in b]
        finally:
            db2.close()
    finally:
        db.close()


def test_reader_picks_up_indexes_created_and_dropped(writer, tmp_path):
    path = tmp_path / "db.unidb"
    rng = np.random.default_rng(2)
    writer("add", start=0, n=500, seed=5)
    db, t = reader(path)
    try:
        assert set(t.list_indexes()) == {"body", "sp"}
        verify(t, rng, quiet=True)
        writer("create_index", column="emb", kind="partition", options=child.PARTITION_OPTIONS)
        writer("create_index", column="num", kind="sorted")
        writer("add", start=500, n=100, seed=6)
        assert set(t.list_indexes()) == {"body", "sp"}       # nothing read since
        b = t.search(np.zeros(child.DIM)).limit(5)
        assert b.explain().plan == "index"                    # now served by the index
        assert set(t.list_indexes()) == {"body", "sp", "emb", "num"}
        assert t.index_stats("emb")["live_vectors"] == 600
        verify(t, rng, quiet=True)
        writer("drop_index", column="emb")
        writer("delete", ids=list(range(0, 100)))
        assert t.search(np.zeros(child.DIM)).limit(5).explain().plan == "flat-exact"
        assert set(t.list_indexes()) == {"body", "sp", "num"}
        verify(t, rng, quiet=True)
        # re-created with other options while the reader was not looking
        writer("create_index", column="emb", kind="partition", options={"target_posting": 40})
        writer("drop_index", column="num")
        verify(t, rng, quiet=True)
        assert t.list_indexes()["emb"]["options"] == {"target_posting": 40}
        assert "num" not in t.list_indexes()
    finally:
        db.close()


def test_reader_builds_unreadable_snapshots_in_memory_and_never_writes(writer, tmp_path):
    path = tmp_path / "db.unidb"
    writer("add", start=0, n=400, seed=7)
    writer("create_index", column="emb", kind="partition", options=child.PARTITION_OPTIONS)
    writer("create_index", column="num", kind="sorted")
    writer("flush")
    table = path / "tables" / "t"
    # damage the saved text and partition snapshots (as if caught mid-replace or corrupted)
    (index_folder(table, "body") / "index.json").write_text('{"format": 1, "kind": "te')
    pman = index_folder(table, "emb") / "partition-index.json"
    man = json.loads(pman.read_text())
    (index_folder(table, "emb") / man["files"]["vecs"]).unlink()
    # a stale temp file a reader must not clean up (only the writer owns the folder)
    (index_folder(table, "body") / "x.tmp").write_text("writer's")

    def listing():
        return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns)
                      for p in path.rglob("*") if p.is_file())

    before = listing()
    db, t = reader(path)
    try:
        rng = np.random.default_rng(3)
        for _ in range(3):
            verify(t, rng, quiet=True)
        assert listing() == before                           # the reader wrote nothing
    finally:
        db.close()
    assert listing() == before


# -- the big one: continuous writes in another process, two reader threads -------------------
def test_reader_follows_churning_writer_exactly(tmp_path):
    path = tmp_path / "db.unidb"
    seconds = float(os.environ.get("UNIDB_CHURN_SECONDS", "15"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, str(CHILD), str(path), "churn", str(seconds), "11"],
                         stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "READY"
        db, t = reader(path)
        assert {"emb", "num", "body", "sp"} <= set(t.list_indexes())
        rebalanced = t.index_stats("emb")
        errors: list[BaseException] = []
        checks = [0, 0]
        states: set = set()
        done = threading.Event()

        def loop(i):
            rng = np.random.default_rng(100 + i)
            try:
                while not done.is_set():
                    verify(t, rng, quiet=False)
                    checks[i] += 1
                    states.add((t._store.manifest.checkpoint_lsn, tuple(t._store.manifest.segments)))
            except BaseException as e:
                errors.append(e)
                done.set()

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + seconds + 60
        while p.poll() is None and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        line = p.stdout.readline().strip()
        assert p.wait(60) == 0 and line.startswith("DONE"), line
        counts = json.loads(line[5:])
        assert counts["compact"] >= 2 and counts["delete"] >= 5, counts
        print(f"\nreader checks {checks}, states seen {len(states)}, writer {counts}")
        assert sum(checks) >= 20, checks
        assert len(states) >= 5, f"the reader saw only {len(states)} checkpoints/compactions"
        # the reader's own copy of the partition index was split and merged as it followed
        assert t._indexes.vector_index("emb").wait_idle(60)
        after = t.index_stats("emb")
        assert after["splits"] > rebalanced["splits"] and after["merges"] > rebalanced["merges"]
        # the writer is gone: one more exact pass, and a fresh reader agrees
        verify(t, np.random.default_rng(7), quiet=True)
        db2, t2 = reader(path)
        verify(t2, np.random.default_rng(7), quiet=True)
        db2.close()
        db.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# -- the writer process itself: its indexes run ahead of a query's snapshot -------------------
def test_writer_process_searches_never_return_rows_outside_their_snapshot(tmp_path):
    """In the writing process every commit feeds the indexes at once, so a query that took its
    snapshot just before may get index rows the snapshot lacks: they must be dropped, never
    taken (KeyError) or used to index the snapshot's row masks (IndexError)."""
    db = unidb.connect(tmp_path / "w.unidb")
    t = db.create_table("t", child.schema())
    t.add(child.rows(0, 300, 1))
    t.create_index("emb", "partition", **child.PARTITION_OPTIONS)
    t.create_index("num", "sorted")
    stop = threading.Event()
    errors: list[BaseException] = []
    served = [0]

    def write():
        try:
            nxt = 300
            rng = np.random.default_rng(5)
            while not stop.is_set():
                t.add(child.rows(nxt, 20, nxt))
                nxt += 20
                t.delete(ids=rng.choice(nxt, 10, replace=False).tolist())
        except BaseException as e:
            errors.append(e)

    def search(i):
        rng = np.random.default_rng(i)
        try:
            while not stop.is_set():
                q = rng.standard_normal(child.DIM)
                lo = float(rng.uniform(0, 900))
                for b in (t.search(q).limit(50),
                          t.search(q).where(f"num >= {lo} AND num < {lo + 20}")
                          .params(force_plan="scalar").limit(20),
                          t.search(q).where("num >= 0").params(force_plan="index").limit(20),
                          t.search(q, text="w1").limit(10)):
                    results, _, _, state = b._run()
                    for rid, _ in results:
                        assert state.is_live(rid).all()
                        state.take(rid, ["id"])
                    served[0] += 1
        except BaseException as e:
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=write)] + \
        [threading.Thread(target=search, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.05)
    stop.set()
    for th in threads:
        th.join()
    db.close()
    if errors:
        raise errors[0]
    assert served[0] > 50


def test_reader_rebuilds_an_index_whose_catch_up_fails(tmp_path):
    """A catch-up that raises half way must not leave a half-caught-up index behind."""
    path = tmp_path / "db.unidb"
    wdb = unidb.connect(path)                         # a read-only open takes no lock
    w = wdb.create_table("t", child.schema())
    w.add(child.rows(0, 300, 1))
    db, t = reader(path)
    try:
        broken = t._indexes.get("body")

        def fail(*a, **k):
            raise RuntimeError("injected")
        broken.impl.add = fail
        w.delete(ids=list(range(0, 300, 3)))
        w.add(child.rows(300, 100, 2))
        verify(t, np.random.default_rng(4), quiet=True, kinds=("text", "match", "sparse"))
        assert t._indexes.get("body") is not broken
    finally:
        db.close()
        wdb.close()
