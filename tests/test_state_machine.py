"""Random sequences of add/upsert/delete/update, with reopen (and crash-reopen) between steps,
agree with a plain Python model of the table."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import unidb
from unidb.errors import ValidationError

KEYS = st.integers(0, 40)
CATS = st.sampled_from(["a", "b", "c"])
PRICES = st.one_of(st.none(), st.integers(0, 9).map(float))
DIM = 3
OPTIONS = {"storage": {"memtable_flush_bytes": 2_000}}   # many checkpoints


def vec(k: int, gen: int) -> list[float]:
    return [float(k), float(gen), 1.0]


class TableModel(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.dir = Path(tempfile.mkdtemp())
        self.db = unidb.connect(self.dir / "db", options=OPTIONS)
        self.t = self.db.create_table("t", {
            "id": unidb.Int64(primary_key=True), "cat": unidb.String(),
            "price": unidb.Float64(nullable=True), "v": unidb.Vector(DIM)})
        self.model: dict[int, dict] = {}
        self.gen = 0

    def teardown(self):
        try:
            self.db.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _row(self, k, cat, price):
        self.gen += 1
        return {"id": k, "cat": cat, "price": price, "v": vec(k, self.gen)}

    @rule(keys=st.lists(KEYS, min_size=1, max_size=6, unique=True), cat=CATS, price=PRICES)
    def add(self, keys, cat, price):
        rows = [self._row(k, cat, price) for k in keys]
        if any(k in self.model for k in keys):
            try:
                self.t.add(rows)
            except ValidationError:
                return
            raise AssertionError("add with an existing key must fail")
        self.t.add(rows)
        for r in rows:
            self.model[r["id"]] = r

    @rule(keys=st.lists(KEYS, min_size=1, max_size=6, unique=True), cat=CATS, price=PRICES)
    def upsert(self, keys, cat, price):
        rows = [self._row(k, cat, price) for k in keys]
        self.t.upsert(rows)
        for r in rows:
            self.model[r["id"]] = r

    @rule(keys=st.lists(KEYS, max_size=5))
    def delete_ids(self, keys):
        n = self.t.delete(ids=keys)
        assert n == len({k for k in keys if k in self.model})
        for k in keys:
            self.model.pop(k, None)

    @rule(cat=CATS)
    def delete_where(self, cat):
        n = self.t.delete(where=f"cat = '{cat}'")
        gone = [k for k, r in self.model.items() if r["cat"] == cat]
        assert n == len(gone)
        for k in gone:
            del self.model[k]

    @rule(cat=CATS, price=PRICES, limit=st.integers(0, 9))
    def update(self, cat, price, limit):
        n = self.t.update(where=f"price < {limit}", values={"cat": cat})
        hit = [r for r in self.model.values() if r["price"] is not None and r["price"] < limit]
        assert n == len(hit)
        for r in hit:
            r["cat"] = cat

    @rule()
    def reopen(self):
        self.db.close()
        self.db = unidb.connect(self.dir / "db", options=OPTIONS)
        self.t = self.db.open_table("t")

    @rule()
    def crash_and_reopen(self):
        # Drop the handle without any checkpoint: recovery must replay the log.
        self.t._store.abandon()
        self.db._folder.close()
        self.db = unidb.connect(self.dir / "db", options=OPTIONS)
        self.t = self.db.open_table("t")

    @rule()
    def compact(self):
        self.t.compact()

    @invariant()
    def agrees(self):
        if not hasattr(self, "t"):
            return
        got = self.t.to_arrow().to_pylist()
        assert len(self.t) == len(self.model) == len(got)
        assert {r["id"]: r for r in got} == {k: {**r, "v": [float(x) for x in r["v"]]}
                                           for k, r in self.model.items()}
        for cat in "abc":
            assert self.t.count(where=f"cat = '{cat}'") == sum(
                r["cat"] == cat for r in self.model.values())
        if self.model:
            k = sorted(self.model)[0]
            assert self.t.get([k, 999]).to_pylist()[0]["id"] == k
            hit = self.t.search(self.model[k]["v"]).limit(1).to_list()[0]
            assert hit["id"] == k and hit["_distance"] == 0.0


TableModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_table_agrees_with_model = TableModel.TestCase
