"""Bad input raises the documented unidb.errors class, names the problem, changes nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import unidb
from unidb.errors import NotFoundError, QueryError, SchemaError, ValidationError
from unidb.schema import MAX_STRING_BYTES

from conftest import items_rows, items_schema


@pytest.fixture
def table(db):
    t = db.create_table("items", items_schema())
    t.add(items_rows(50))
    return t


def snapshot(t):
    return t.to_arrow(columns=["id", "price", "category", "year", "active", "emb"]).sort_by("id")


def one(id_=1000, **over):
    row = {"id": id_, "price": 1.0, "category": "a", "year": 2000, "active": True,
           "emb": np.ones(8, dtype=np.float32)}
    row.update(over)
    return row


BAD_ROWS = [
    (lambda: [one(emb=np.ones(7))], "dimension 8"),
    (lambda: [one(emb=[1.0] * 9)], "dimension 8"),
    (lambda: [one(emb=[np.nan] + [0.0] * 7)], "NaN"),
    (lambda: [one(emb=[np.inf] + [0.0] * 7)], "NaN or infinity"),
    (lambda: [one(emb=[1e39] + [0.0] * 7)], "NaN or infinity"),
    (lambda: [one(emb=["x"] * 8)], "emb"),
    (lambda: [one(price="cheap")], "price"),
    (lambda: [one(id_="seven")], "id"),
    (lambda: [one(year=1.5)], "year"),
    (lambda: [one(colour="red")], "unknown column"),
    (lambda: [{"id": 1001, "price": 1.0}], "missing value"),
    (lambda: [one(category=None)], "category"),
    (lambda: [one(id_=None)], "primary key"),
    (lambda: [one(1001), one(1001)], "duplicate primary key 1001"),
    (lambda: [one(5)], "already exists"),
    (lambda: [one(category="x" * (MAX_STRING_BYTES + 1))], "exceeds the limit"),
    (lambda: [one(1001), one(1002, emb=[0.0] * 3)], "row 1"),
    (lambda: "not rows", "list of dicts"),
    (lambda: [1, 2, 3], "row 0"),
    (lambda: {"id": [1, 2], "price": [1.0]}, "different lengths"),
]


@pytest.mark.parametrize("make, needle", BAD_ROWS)
def test_bad_rows_rejected_and_table_unchanged(table, make, needle):
    before = snapshot(table)
    with pytest.raises(ValidationError) as e:
        table.add(make())
    assert needle.lower() in str(e.value).lower()
    assert snapshot(table).equals(before)
    assert len(table) == 50


def test_rejected_upsert_and_update_change_nothing(table):
    before = snapshot(table)
    with pytest.raises(ValidationError):
        table.upsert([one(3), one(1001, emb=[np.nan] * 8)])
    with pytest.raises(ValidationError, match="primary key"):
        table.update(where="id = 3", values={"id": 7})
    with pytest.raises(ValidationError, match="emb"):
        table.update(where="id = 3", values={"emb": [1.0, 2.0]})
    with pytest.raises(ValidationError, match="unknown column"):
        table.update(values={"colour": "red"})
    assert snapshot(table).equals(before)


def test_cosine_zero_vector_rejected(db):
    t = db.create_table("c", {"id": unidb.Int64(primary_key=True), "v": unidb.Vector(3, metric="cosine")})
    with pytest.raises(ValidationError, match="zero vector"):
        t.add([{"id": 1, "v": [0, 0, 0]}])
    assert len(t) == 0
    t.add([{"id": 1, "v": [0, 0, 1]}])
    with pytest.raises(ValidationError, match="zero vector"):
        t.search([0.0, 0.0, 0.0]).to_list()


@pytest.mark.parametrize("where, needle", [
    ("", "empty"), ("   ", "empty"), ("price <", "position"), ("(price < 3", "position"),
    ("colour = 'red'", "colour"), ("price < 'abc'", "price"), ("category = 3", "category"),
    ("foo(price) > 1", "foo"), ("price < 1 AND", "position"),
])
def test_bad_filters(table, where, needle):
    for call in (lambda: table.count(where=where), lambda: table.to_arrow(where=where),
                 lambda: table.search(np.ones(8)).where(where).to_list(),
                 lambda: table.delete(where=where)):
        with pytest.raises(QueryError) as e:
            call()
        assert needle.lower() in str(e.value).lower()
    assert len(table) == 50


def test_bad_queries(table):
    with pytest.raises(ValidationError, match="dimension 8"):
        table.search(np.ones(3)).to_list()
    with pytest.raises(ValidationError, match="NaN"):
        table.search([np.nan] * 8).to_list()
    with pytest.raises(QueryError, match="limit"):
        table.search(np.ones(8)).limit(0)
    with pytest.raises(QueryError, match="min"):
        table.search(np.ones(8)).distance_range(min=2, max=1)
    with pytest.raises(QueryError, match="unknown column"):
        table.search(np.ones(8)).select(["nope"])


def test_bad_schemas(db):
    with pytest.raises(SchemaError, match="primary key"):
        db.create_table("a", {"x": unidb.Int64()})
    with pytest.raises(SchemaError, match="dim"):
        db.create_table("b", {"id": unidb.Int64(primary_key=True), "v": unidb.Vector(0)})
    with pytest.raises(SchemaError, match="metric"):
        db.create_table("c", {"id": unidb.Int64(primary_key=True), "v": unidb.Vector(3, metric="hamming")})
    with pytest.raises(SchemaError, match="reserved"):
        db.create_table("d", {"id": unidb.Int64(primary_key=True), "_x": unidb.Int64()})
    with pytest.raises(SchemaError, match="table name"):
        db.create_table("../evil", {"id": unidb.Int64(primary_key=True)})
    with pytest.raises(SchemaError, match="instance"):
        db.create_table("e", {"id": unidb.Int64})
    db.create_table("ok", {"id": unidb.String(primary_key=True)})
    with pytest.raises(SchemaError, match="already exists"):
        db.create_table("ok", {"id": unidb.String(primary_key=True)})
    with pytest.raises(NotFoundError, match="nope"):
        db.open_table("nope")
    assert db.table_names() == ["ok"]


def test_all_input_forms_accepted(db):
    t = db.create_table("forms", items_schema())
    rows = items_rows(40)
    df = pd.DataFrame({k: (list(v) if k == "emb" else v) for k, v in rows.items()})
    t.add(df.iloc[:10])
    t.add({k: v[10:20] for k, v in rows.items()})
    arrow = pa.table({k: (pa.FixedSizeListArray.from_arrays(pa.array(v[20:30].ravel()), 8)
                          if k == "emb" else pa.array(v[20:30] if not isinstance(v, list) else v[20:30]))
                      for k, v in rows.items()})
    t.add(arrow)
    t.add(arrow.to_batches()[0].slice(0, 0))      # empty batch is a no-op
    recs = [{k: v[i] for k, v in rows.items()} for i in range(30, 40)]
    t.add(recs)
    got = t.to_arrow().sort_by("id")
    assert got.column("id").to_pylist() == list(range(40))
    np.testing.assert_array_equal(
        np.stack(got.column("emb").to_pylist()).astype(np.float32), rows["emb"])
    assert got.column("year").to_pylist() == rows["year"]


def test_unknown_text_analyzer_rejected_before_creating(db):
    with pytest.raises(SchemaError, match="analyzer"):
        db.create_table("t", {"id": unidb.Int64(primary_key=True), "body": unidb.Text(analyzer="klingon")})
    assert db.table_names() == []
    t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "body": unidb.Text(analyzer="french")})
    t.add([{"id": 1, "body": "les chats mangeaient"}])
    assert t.search(text="chat").to_list()[0]["id"] == 1
