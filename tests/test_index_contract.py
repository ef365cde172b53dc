"""The index contract (unidb/index/contract.py) and the posting-store contract
(unidb/index/partition/store.py).

Every index kind honours the first, built directly and through the table API. A posting store
written against the second alone (`DictPostingStore` below: one class, only the contract's
abstract methods) runs the partition index -- build, inserts, deletes, LIRE splits, merges and
reassignments, save and load -- with search results identical to the built-in arena store's,
and equal to brute force at full probe. LIRE and persistence are held to the contract by an
ast check: they touch no private attribute of another object and no concrete store class.
"""
from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

import unidb
from unidb.index.contract import COMMON_STATS, Index, ScalarIndex, TermIndex, VectorIndex
from unidb.index.partition import PartitionIndex, PartitionOptions, lire, persist
from unidb.index.partition.postings import STORES, register_store
from unidb.index.partition.store import WORK_PREFIX, PostingStore
from unidb.index.scalar.sorted_index import SortedIndex
from unidb.index.sparse import SparseIndex, TextIndex
from unidb.kernels import partition as K

SUB_PROTOCOLS = (VectorIndex, TermIndex, ScalarIndex)
DIM = 16


# ----------------------------------------------------------------------------- a second store
def _empty(dim: int):
    return (np.zeros((0, dim), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
            np.zeros(0, np.uint8))


class DictPostingStore(PostingStore):
    """Each posting its own four arrays in a dict, replaced (never modified) on every write,
    so a snapshot is a shallow copy of the dict. A layout unlike the arena's: no slices, no
    slot table, no garbage (a retired posting's arrays go when no view holds them)."""

    kind = "test-dict"

    def __init__(self, dim, folder=None):
        self.dim = dim
        self.postings: dict[int, tuple] = {}

    def lengths(self, posts):
        return np.array([len(self.postings[p][2]) if p in self.postings else 0
                         for p in np.asarray(posts).tolist()], dtype=np.int64)

    def read(self, p):
        return self.postings.get(int(p)) or _empty(self.dim)

    def append(self, p, vecs, sqn, rids, vers):
        old = self.read(p)
        self.postings[int(p)] = tuple(np.concatenate([o, n.astype(o.dtype)])
                                      for o, n in zip(old, (vecs, sqn, rids, vers)))

    def replace(self, p, vecs, sqn, rids, vers):
        self.postings[int(p)] = (np.array(vecs, np.float32).reshape(-1, self.dim),
                                 np.array(sqn, np.float32), np.array(rids, np.int64),
                                 np.array(vers, np.uint8))

    def retire(self, p):
        self.postings.pop(int(p), None)

    def bulk_load(self, lens, vecs, sqn, rids, vers):
        ends = np.cumsum(lens)
        self.postings = {}
        for p, (e, n) in enumerate(zip(ends.tolist(), np.asarray(lens).tolist())):
            self.replace(p, vecs[e - n:e], sqn[e - n:e], rids[e - n:e], vers[e - n:e])

    def snapshot(self):
        view = DictPostingStore(self.dim)
        view.postings = dict(self.postings)
        return view

    def stats(self):
        rows = sum(len(e[2]) for e in self.postings.values())
        return {"rows": rows, "garbage_rows": 0,
                "bytes": sum(a.nbytes for e in self.postings.values() for a in e)}


register_store(DictPostingStore)


def test_the_second_store_implements_exactly_the_contract_abstract_methods():
    own = {n for n, v in vars(DictPostingStore).items()
           if inspect.isfunction(v) and not n.startswith("__")}
    assert own == set(PostingStore.__abstractmethods__)
    assert not DictPostingStore.__abstractmethods__
    assert STORES["test-dict"] is DictPostingStore
    with pytest.raises(ValueError, match="already taken"):
        register_store(type("Other", (DictPostingStore,), {"kind": "memory"}))
    with pytest.raises(ValueError, match="test-dict"):
        PartitionOptions(storage="no-such-store").validate()


# ----------------------------------------------------------------------------- the same workload
def mixture(rng, n, centers):
    lab = rng.integers(0, len(centers), n)
    return (centers[lab] + rng.standard_normal((n, centers.shape[1]))).astype(np.float32)


def brute_force(rows: dict[int, np.ndarray], q: np.ndarray, k: int, metric: str):
    ids = np.array(sorted(rows))
    x = np.stack([rows[r] for r in ids]).astype(np.float64)
    qq = q.astype(np.float64)
    if metric == "cosine":       # normalised as the index does: in float64, stored float32
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
        qq = (qq / np.linalg.norm(qq)).astype(np.float32).astype(np.float64)
    d = -(x @ qq) if metric == "ip" else ((x - qq) ** 2).sum(1)
    o = np.lexsort((ids, d))[:k]
    return ids[o]


def run_workload(storage: str, metric: str, tmp_path):
    """Build, then rounds of drifting inserts, deletes and vector replacements, a save/load
    and a mass delete; returns every search result along the way and the LIRE counters."""
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((12, DIM)) * 3
    opts = PartitionOptions(target_posting=40, max_posting=80, storage=storage)
    x = mixture(rng, 1500, centers)
    rows = {i: x[i] for i in range(len(x))}
    idx = PartitionIndex.build(np.arange(len(x)), x, metric, opts, folder=tmp_path / storage)
    q = mixture(rng, 12, centers)
    out = []

    def record(step):
        for kw in ({}, {"nprobe": 2}, {"nprobe": 10 ** 6}):
            out.append((step, "batch", kw, *idx.search(q, 10, **kw)))
        for v in q[:4]:
            out.append((step, "one", *idx.search(v, 10)))
            out.append((step, "one-full", *idx.search(v, 10, nprobe=10 ** 6)))
        out.append((step, "allow", *idx.search(q[:3], 10, allow=lambda r: r % 3 == 0)))
        scan = idx.scan(q[4], batch_partitions=2)
        for _ in range(3):
            b = scan.next_batch()
            if b is not None:
                out.append((step, "scan", b.row_ids, b.distances))
        # full probe is exact: the same as brute force over the live rows
        got, _ = idx.search(q, 10, nprobe=10 ** 6)
        for i in range(len(q)):
            np.testing.assert_array_equal(got[i], brute_force(rows, q[i], 10, metric))

    record("build")
    nxt = len(x)
    for step in range(4):
        y = mixture(rng, 400, centers) * (1 + 0.2 * step) + step
        idx.add(np.arange(nxt, nxt + 400), y)
        rows.update({nxt + i: y[i] for i in range(400)})
        nxt += 400
        gone = rng.choice(sorted(rows), 350, replace=False)
        assert idx.delete(gone) == 350
        for r in gone.tolist():
            rows.pop(r)
        again = rng.choice(sorted(rows), 30, replace=False)       # re-adding replaces
        z = mixture(rng, 30, centers)
        idx.add(again, z)
        rows.update({int(r): z[i] for i, r in enumerate(again)})
        assert len(idx) == len(rows)
        record(f"step{step}")
    idx.save(tmp_path / f"snap-{storage}", covered=7)
    idx.close()
    idx, covered = PartitionIndex.load(tmp_path / f"snap-{storage}")
    assert covered == 7 and type(idx._state.store) is STORES[storage]
    record("loaded")
    half = np.array(sorted(rows))[::2]
    assert idx.delete(half) == len(half)
    for r in half.tolist():
        rows.pop(r)
    record("halved")
    st = idx.stats()
    idx.close()
    counters = {c: st[c] for c in ("splits", "merges", "compactions", "reassign_evaluated",
                                   "vectors_moved", "unsplittable", "postings", "entries",
                                   "live_vectors")}
    return out, counters


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_a_new_store_is_one_class_and_gives_the_arena_store_results(tmp_path, metric):
    want, want_counters = run_workload("memory", metric, tmp_path)
    got, got_counters = run_workload("test-dict", metric, tmp_path)
    assert want_counters["splits"] > 0 and want_counters["merges"] > 0
    assert want_counters["vectors_moved"] > 0
    assert got_counters == want_counters          # LIRE made the same decisions
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[:-2] == w[:-2]
        np.testing.assert_array_equal(g[-2], w[-2], err_msg=str(w[:-2]))
        np.testing.assert_array_equal(g[-1], w[-1], err_msg=str(w[:-2]))


@pytest.mark.parametrize("storage", ["memory", "disk", "test-dict"])
def test_a_published_view_never_changes_under_later_writes(tmp_path, storage):
    """The store contract's promise to readers: a view answers with the state it was
    published with, whatever the writer does afterwards (splits, merges, appends)."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((8, DIM)) * 3
    opts = PartitionOptions(target_posting=30, max_posting=60, storage=storage)
    idx = PartitionIndex.build(np.arange(800), mixture(rng, 800, centers), "l2", opts,
                               folder=tmp_path)
    view = idx.view()
    q = mixture(rng, 1, centers)[0]
    live = view.routing.live_ids

    def read_all():
        r, d = view.postings.scan_all(q, K.MODE_L2, view.vmap, live)
        return r.copy(), d.copy(), view.postings.valid_counts(view.vmap, live).copy()

    before = read_all()
    splits = idx.stats()["splits"]
    idx.add(np.arange(800, 2000), mixture(rng, 1200, centers) + 2.0)
    idx.delete(np.arange(0, 800, 2))
    assert idx.stats()["splits"] > splits and idx.stats()["merges"] > 0
    after = read_all()
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)
    idx.close()


# ----------------------------------------------------------------------------- index kinds
class Kind:
    """How to build, feed and query one index kind for the contract tests: `query` returns
    every live row (so deletes must disappear from it); `results` ranked answers to compare
    across a save/load."""
    protocol: type = Index

    def make(self, tmp_path):
        raise NotImplementedError

    def values(self, rng, n):
        raise NotImplementedError

    def empty(self):
        raise NotImplementedError

    def query(self, idx) -> set[int]:
        raise NotImplementedError

    def results(self, idx) -> list:
        raise NotImplementedError


class PartitionKind(Kind):
    protocol = VectorIndex

    def __init__(self, storage):
        self.storage = storage
        self.q = np.random.default_rng(9).standard_normal((3, DIM)).astype(np.float32)

    def make(self, tmp_path):
        return PartitionIndex.build(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), "l2",
                                    PartitionOptions(target_posting=20, max_posting=40,
                                                     storage=self.storage), folder=tmp_path)

    def values(self, rng, n):
        return rng.standard_normal((n, DIM)).astype(np.float32)

    def empty(self):
        return np.zeros((0, DIM), np.float32)

    def query(self, idx):
        ids, _ = idx.search(self.q[0], len(idx) + 5, nprobe=10 ** 6)
        return set(ids[ids >= 0].tolist())

    def results(self, idx):
        return [idx.search(self.q, 10), idx.search(self.q[0], 10),
                idx.search(self.q, 10, nprobe=10 ** 6)]


WORDS = ["alpha", "beta", "gamma", "delta", "omega"]


class TextKind(Kind):
    protocol = TermIndex

    def make(self, tmp_path):
        return TextIndex()

    def values(self, rng, n):
        return [f"common {WORDS[rng.integers(5)]} {WORDS[rng.integers(5)]}" for _ in range(n)]

    def empty(self):
        return []

    def query(self, idx):
        ids, _ = idx.search("common", len(idx) + 5)
        return set(ids.tolist())

    def results(self, idx):
        return [idx.search("alpha gamma", 10), idx.search("common beta", 10)]


class SparseKind(Kind):
    protocol = TermIndex

    def make(self, tmp_path):
        return SparseIndex()

    def values(self, rng, n):
        return [(np.array([0, int(rng.integers(1, 50))], np.int32),
                 np.array([1.0, float(rng.random())], np.float32)) for _ in range(n)]

    def empty(self):
        return []

    def query(self, idx):
        ids, _ = idx.search([0], [1.0], len(idx) + 5)
        return set(ids.tolist())

    def results(self, idx):
        return [idx.search([0, 7], [0.5, 2.0], 10), idx.search([3, 11], [1.0, 1.0], 10)]


class SortedKind(Kind):
    protocol = ScalarIndex

    def make(self, tmp_path):
        return SortedIndex()

    def values(self, rng, n):
        return rng.random(n)

    def empty(self):
        return np.zeros(0)

    def query(self, idx):
        return set(idx.range_rows().tolist())

    def results(self, idx):
        return [idx.range_rows(0.2, 0.7), idx.range_rows(None, 0.5, True, False),
                idx.count_range(0.1, 0.9)]


KINDS = {"partition-memory": PartitionKind("memory"), "partition-disk": PartitionKind("disk"),
         "partition-test-dict": PartitionKind("test-dict"), "text": TextKind(),
         "sparse": SparseKind(), "sorted": SortedKind()}


def assert_same(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


def check_stats(idx):
    st = idx.stats()
    assert set(st) == set(type(idx).STATS_KEYS), "stats() keys must be the documented ones"
    assert set(COMMON_STATS) <= set(st)
    assert st["live_rows"] == len(idx)
    assert st["bytes"] >= 0
    return st


@pytest.mark.parametrize("name", list(KINDS))
def test_every_index_kind_honours_the_contract(tmp_path, name):
    kind = KINDS[name]
    rng = np.random.default_rng(5)
    idx = kind.make(tmp_path / "work")
    assert isinstance(idx, Index) and isinstance(idx, kind.protocol)
    assert [p for p in SUB_PROTOCOLS if isinstance(idx, p)] == [kind.protocol]
    assert len(idx) == 0 and kind.query(idx) == set()
    check_stats(idx)

    idx.add(np.zeros(0, np.int64), kind.empty())                  # an empty batch: a no-op
    assert len(idx) == 0
    idx.add(np.arange(300), kind.values(rng, 300))
    assert len(idx) == 300 and kind.query(idx) == set(range(300))
    idx.add(np.arange(300, 400), kind.values(rng, 100))
    assert len(idx) == 400
    assert check_stats(idx)["live_rows"] == 400

    gone = np.arange(0, 400, 7)
    assert idx.delete(np.concatenate([gone, [10_000, 10_001]])) == len(gone)   # unknown: ignored
    assert idx.delete(gone[:5]) == 0                               # already deleted: ignored
    assert len(idx) == 400 - len(gone)
    assert kind.query(idx) == set(range(400)) - set(gone.tolist())
    assert check_stats(idx)["live_rows"] == 400 - len(gone)

    want = kind.results(idx)
    idx.save(tmp_path / "snap", 1234)
    back, covered = type(idx).load(tmp_path / "snap")
    assert covered == 1234 and type(back) is type(idx)
    assert len(back) == len(idx) and kind.query(back) == kind.query(idx)
    assert_same(kind.results(back), want)
    assert set(check_stats(back)) == set(idx.stats())

    idx.close()
    idx.close()                                                   # idempotent
    back.close()
    back.close()


def test_closing_a_disk_backed_partition_index_deletes_its_working_files(tmp_path):
    kind = KINDS["partition-disk"]
    idx = kind.make(tmp_path)
    idx.add(np.arange(200), kind.values(np.random.default_rng(1), 200))
    assert any(f.name.startswith(WORK_PREFIX) for f in tmp_path.iterdir())
    idx.close()
    idx.close()
    assert not any(f.name.startswith(WORK_PREFIX) for f in tmp_path.iterdir())


def test_indexes_built_through_the_table_api_honour_the_contract(tmp_path):
    rng = np.random.default_rng(2)
    n = 600
    schema = {"id": unidb.Int64(primary_key=True), "emb": unidb.Vector(DIM),
              "body": unidb.Text(), "sv": unidb.SparseVector(nullable=True),
              "price": unidb.Float64(nullable=True)}
    rows = [{"id": i, "emb": rng.standard_normal(DIM).astype(np.float32).tolist(),
             "body": f"common {WORDS[i % 5]}", "sv": {0: 1.0, int(i % 40) + 1: 0.5},
             "price": None if i % 10 == 0 else float(rng.random())} for i in range(n)]
    db = unidb.connect(tmp_path / "db")
    t = db.create_table("t", schema)
    t.add(rows)
    t.create_index("emb", kind="partition", target_posting=30, max_posting=60)
    t.create_index("price", kind="sorted")
    expect = {"emb": (PartitionIndex, VectorIndex, n), "body": (TextIndex, TermIndex, n),
              "sv": (SparseIndex, TermIndex, n), "price": (SortedIndex, ScalarIndex, n - n // 10)}

    def check(t, dead):
        for column, (cls, protocol, count) in expect.items():
            impl = t._indexes.get(column).impl
            assert type(impl) is cls
            assert isinstance(impl, Index) and isinstance(impl, protocol)
            live = count - (dead if column != "price" else
                            sum(1 for i in range(dead) if i % 10))
            assert len(impl) == live
            st = t.index_stats(column)
            assert st["live_rows"] == live and st["kind"] and st["bytes"] >= 0
            assert set(type(impl).STATS_KEYS) <= set(st)

    check(t, 0)
    q = np.asarray(rows[3]["emb"], np.float32)
    t.delete(ids=list(range(50)))
    check(t, 50)
    before = [r["id"] for r in t.search(q).limit(10).to_list()]
    text_before = [r["id"] for r in t.search(text="alpha").limit(10).to_list()]
    assert not set(before) & set(range(50))
    db.close()

    db = unidb.connect(tmp_path / "db")                            # loaded from the snapshots
    t = db.open_table("t")
    check(t, 50)
    assert [r["id"] for r in t.search(q).limit(10).to_list()] == before
    assert [r["id"] for r in t.search(text="alpha").limit(10).to_list()] == text_before
    t.drop_index("price")                                          # close() through the set
    db.close()


# ----------------------------------------------------------------------------- guards
def _private_accesses(module) -> list[str]:
    """Attribute accesses `x._name` (x not `self`) in a module's source."""
    tree = ast.parse(inspect.getsource(module))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                bad.append(f"line {node.lineno}: {ast.unparse(node)}")
    return bad


@pytest.mark.parametrize("module", [lire, persist], ids=["lire", "persist"])
def test_lire_and_persist_reach_no_private_attribute_of_another_object(module):
    assert _private_accesses(module) == []


@pytest.mark.parametrize("module", [lire, persist], ids=["lire", "persist"])
def test_lire_and_persist_use_the_store_contract_not_a_store_class(module):
    src = inspect.getsource(module)
    tree = ast.parse(src)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names} | {n.module for n in ast.walk(tree)
                                     if isinstance(n, ast.ImportFrom)}
    assert "unidb.index.partition.postings" not in imported
    assert not {"MemoryPostingStore", "DiskPostingStore", "Arena", "arena"} & imported
    for word in ("DiskPostingStore", "MemoryPostingStore", "__name__", ".arena", "packed"):
        assert word not in src
    # every method LIRE calls on the store is part of the contract
    contract = {n for n in dir(PostingStore) if not n.startswith("_")}
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and ast.unparse(node.value) in ("st.store", "store")}
    assert used and used <= contract, used - contract
