"""Bad input at the public API boundary: a clear unidb error naming the problem, nothing changed.

Covers keys (get/delete check them exactly as add does), exact int64-vs-float filter
comparisons (checked against DuckDB), column names that must be safe as file names, nesting
limits of filter trees, search knobs, and values that used to be coerced silently.
"""
from __future__ import annotations

import math
import operator
from decimal import Decimal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import unidb
from unidb.query.knobs import MAX_NPROBE
from unidb.query.filter import MAX_DEPTH, Expr, col
from unidb.schema import MAX_COLUMN_NAME_BYTES

DIM = 4


@pytest.fixture
def db(tmp_path):
    d = unidb.connect(tmp_path / "db")
    yield d
    d.close()


@pytest.fixture
def t(db):
    t = db.create_table("t", {
        "id": unidb.Int64(primary_key=True), "x": unidb.Float64(nullable=True),
        "n": unidb.Int64(nullable=True), "s": unidb.String(nullable=True),
        "b": unidb.Bool(nullable=True), "title": unidb.Text(nullable=True),
        "v": unidb.Vector(DIM)})
    t.add([{"id": i, "x": float(i), "n": i, "s": f"s{i}", "b": i % 2 == 0,
            "title": "red kettle" if i % 2 else "blue lamp", "v": [i, 1.0, 0.0, 0.5]}
           for i in range(1, 6)])
    return t


def _ids(t) -> list:
    return sorted(t.to_arrow(columns=["id"]).column(0).to_pylist())


# -- defect 8: keys ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [[1.5], [1.0], [2.0], np.array([1.0]), [True], ["1"], [b"1"],
                                 [float("nan")], [None], 1.5, pa.array([1.0])])
def test_int_keys_are_checked_exactly_by_get_and_delete(t, bad):
    before = _ids(t)
    with pytest.raises(unidb.ValidationError) as e:
        t.delete(ids=bad)
    assert "primary key 'id'" in str(e.value)
    with pytest.raises(unidb.ValidationError):
        t.get(bad)
    assert _ids(t) == before                                   # nothing was deleted


def test_float_keys_are_refused_by_add_too(t):
    for bad in ([{"id": 10.0, "v": [0, 0, 0, 1]}], {"id": np.array([10.0]), "v": [[0, 0, 0, 1]]}):
        with pytest.raises(unidb.ValidationError, match="primary key 'id'"):
            t.add(bad)
    assert 10 not in _ids(t)


def test_integer_keys_in_every_form_still_work(t):
    assert t.get([np.int64(2), 3]).column("id").to_pylist() == [2, 3]
    assert t.get(np.array([4, 1])).column("id").to_pylist() == [4, 1]
    assert t.get(pa.array([5])).column("id").to_pylist() == [5]
    assert t.get(2).column("id").to_pylist() == [2]
    assert t.delete(ids=np.array([1, 2], dtype=np.int32)) == 2
    assert _ids(t) == [3, 4, 5]


def test_string_keys_refuse_ints_and_bytes(db):
    t = db.create_table("s", {"k": unidb.String(primary_key=True), "v": unidb.Vector(2)})
    t.add([{"k": "1", "v": [1, 0]}])
    for bad in ([1], [b"1"], [None]):
        with pytest.raises(unidb.ValidationError, match="primary key 'k'"):
            t.get(bad)
        with pytest.raises(unidb.ValidationError):
            t.delete(ids=bad)
    assert len(t) == 1 and t.get("1").num_rows == 1


# -- defect 9: int64 vs float comparisons --------------------------------------------------------
BIG = [2**53 - 1, 2**53, 2**53 + 1, 2**53 + 2, 2**62 + 1, 2**63 - 2, 2**63 - 1, -(2**53) - 1,
       -(2**63), -(2**63) + 1, 0, 1, -1, 2, 3]


def _plain(f: float) -> str:
    """A float as DuckDB DECIMAL text ordering the same against every integer: a whole float
    exactly; any other is below 2^53, where no integer lies between it and repr's digits."""
    if f.is_integer():
        return f"{int(f)}.0"
    return format(Decimal(repr(f)), "f")


def test_count_with_a_float_literal_after_a_huge_id(t):
    t.add([{"id": 2**53 + 1, "v": [0, 0, 0, 1]}, {"id": 2**63 - 1, "v": [0, 0, 0, 1]}])
    assert t.count(where="id > 2.5") == 5
    assert t.count(where="id >= 9007199254740992.0") == 2
    assert t.count(where="id = 2.0") == 1
    assert t.count(where="id BETWEEN 1.5 AND 3.5") == 2
    assert t.count(where="id IN (2.0, 9007199254740993)") == 2
    assert t.count(where="x < 9007199254740993") == 5       # a float column vs a huge int


def test_int_float_comparisons_match_duckdb():
    rng = np.random.default_rng(7)
    ints = BIG + [int(v) for v in rng.integers(-(2**63), 2**63 - 1, 60, dtype=np.int64)] \
        + [int(v) for v in rng.integers(-20, 20, 30)]
    data = pa.table({"id": pa.array(ints + [None], pa.int64())})
    lits = [2.5, -2.5, 0.5, 3.0, -0.0, 9007199254740992.0, 9007199254740994.0, 2.0**63,
            -(2.0**63), 9.223372036854775e18, 1e19, -1e19, 1e25, 4503599627370495.5,
            float(2**62), 1.7976931348623157e308]
    lits += [float(v) for v in rng.uniform(-30, 30, 12)]
    lits += [float(rng.choice(ints)) + float(d) for d in rng.uniform(-3, 3, 12)]
    ops = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
           ">": operator.gt, ">=": operator.ge}
    con = duckdb.connect()
    con.register("data", data)

    def duck(where: str) -> np.ndarray:
        got = con.execute(f"SELECT coalesce({where}, false) FROM data").fetchall()
        return np.array([r[0] for r in got])

    for f in lits:
        lit = _plain(f) if abs(f) < 1e30 else None
        for op, fn in ops.items():
            mine = col("id").__getattribute__(
                {"=": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__",
                 ">=": "__ge__"}[op])(f).evaluate(data)
            exact = np.array([v is not None and fn(v, f) for v in ints + [None]])
            np.testing.assert_array_equal(mine, exact, err_msg=f"id {op} {f!r}")
            if lit is not None:
                np.testing.assert_array_equal(mine, duck(f"id {op} {lit}"),
                                              err_msg=f"id {op} {lit} vs DuckDB")
    for lo, hi in zip(lits[::2], lits[1::2]):
        if abs(lo) >= 1e30 or abs(hi) >= 1e30:
            continue
        mine = col("id").between(lo, hi).evaluate(data)
        np.testing.assert_array_equal(
            mine, duck(f"id BETWEEN {_plain(lo)} AND {_plain(hi)}"), err_msg=f"{lo}..{hi}")
    values = [2.0, 2.5, 9007199254740992.0, float(ints[20]), 2**53 + 1, 2**63 - 1]
    mine = col("id").isin(values).evaluate(data)
    want = duck("id IN (" + ", ".join(_plain(v) if isinstance(v, float) else str(v)
                                      for v in values) + ")")
    np.testing.assert_array_equal(mine, want)


def test_int_column_vs_float_column_is_exact():
    ints = [2**53 + 1, 2**53, 2**63 - 1, -(2**63), 5, None, 7]
    floats = [2.0**53, 2.0**53, 2.0**63, -(2.0**63), 5.5, 1.0, None]
    data = pa.table({"i": pa.array(ints, pa.int64()), "f": pa.array(floats, pa.float64())})
    for op, fn in (("<", operator.lt), ("=", operator.eq), (">=", operator.ge),
                   ("!=", operator.ne)):
        got = unidb.query.filter.parse_filter(f"i {op} f").evaluate(data)
        want = [a is not None and b is not None and fn(a, b) for a, b in zip(ints, floats)]
        assert got.tolist() == want, op
        got = unidb.query.filter.parse_filter(f"f {op} i").evaluate(data)
        want = [a is not None and b is not None and fn(b, a) for a, b in zip(ints, floats)]
        assert got.tolist() == want, op


def test_null_stays_unknown_in_exact_comparisons():
    data = pa.table({"i": pa.array([None, 3], pa.int64())})
    assert (~(col("i") > 2.5)).evaluate(data).tolist() == [False, False]
    assert (~(col("i") < 2.5)).evaluate(data).tolist() == [False, True]


# -- defect 10: column names become file names ---------------------------------------------------
@pytest.mark.parametrize("name", ["a" * (MAX_COLUMN_NAME_BYTES + 1), "é" * 65, "a/b", "..", ".",
                                  "a\x00b", "a.b", ""])
def test_unsafe_column_names_fail_before_anything_is_written(tmp_path, name):
    path = tmp_path / "db"
    db = unidb.connect(path)
    with pytest.raises(unidb.SchemaError, match="column name"):
        db.create_table("docs", {"id": unidb.Int64(primary_key=True), name: unidb.Text()})
    with pytest.raises(unidb.SchemaError, match="column name"):
        db.create_table("sparse", {"id": unidb.Int64(primary_key=True),
                                   name: unidb.SparseVector()})
    assert db.table_names() == []
    db.close()
    db = unidb.connect(path)                                    # still opens, still empty
    assert db.table_names() == []
    t = db.create_table("docs", {"id": unidb.Int64(primary_key=True),
                                 "a" * MAX_COLUMN_NAME_BYTES: unidb.Text()})
    t.add([{"id": 1, "a" * MAX_COLUMN_NAME_BYTES: "hello"}])
    db.close()
    db = unidb.connect(path)
    assert db.open_table("docs").search(text="hello").to_list()[0]["id"] == 1
    db.close()


# -- defect 14: raw Python exceptions ------------------------------------------------------------
def test_get_columns_must_be_names(t):
    for bad in (5, [5], {"id": 1}, ["id", "id"]):
        with pytest.raises(unidb.QueryError, match="column"):
            t.get([1], columns=bad)
        with pytest.raises(unidb.QueryError, match="column"):
            t.to_arrow(columns=bad)


def test_duplicate_input_columns_are_refused(t):
    before = _ids(t)
    df = pd.DataFrame([[100, 1.0, [0, 0, 0, 1]]], columns=["id", "id", "v"])
    with pytest.raises(unidb.ValidationError, match="'id' appears more than once"):
        t.add(df)
    arrow = pa.table([pa.array([100]), pa.array([101]), pa.array([[0.0] * DIM])],
                     names=["id", "id", "v"])
    with pytest.raises(unidb.ValidationError, match="'id' appears more than once"):
        t.upsert(arrow)
    assert _ids(t) == before


def test_deep_builder_filters_fail_with_query_error(t):
    e = col("b")
    with pytest.raises(unidb.QueryError, match=f"deeper than {MAX_DEPTH}"):
        for _ in range(5000):
            e = ~e
    e = col("b")
    with pytest.raises(unidb.QueryError, match=f"deeper than {MAX_DEPTH}"):
        for i in range(5000):
            e = (col("n") == i) | (e & (col("n") > i))
    ok = col("b")
    for _ in range(MAX_DEPTH):
        ok = ~ok
    assert t.count(where=ok) == 2                              # an even number of NOTs
    assert Expr.from_json(ok.to_json()).same_as(ok)


def test_deep_json_and_text_filters_fail_with_query_error(t):
    d = {"column": "b"}
    for _ in range(3000):
        d = {"op": "not", "arg": d}
    with pytest.raises(unidb.QueryError, match=f"deeper than {MAX_DEPTH}"):
        Expr.from_json(d)
    d = {"op": "=", "left": {"column": "n"}, "right": {"literal": 1}}
    for _ in range(3000):
        d = {"op": "or", "args": [{"op": "and", "args": [d, d]}, d]}   # shared: cheap
    with pytest.raises(unidb.QueryError, match=f"deeper than {MAX_DEPTH}"):
        Expr.from_json(d)
    with pytest.raises(unidb.QueryError, match=f"deeper than {MAX_DEPTH}"):
        t.count(where="(" * 3000 + "b" + ")" * 3000)
    with pytest.raises(unidb.QueryError, match=f"deeper than {MAX_DEPTH}"):
        t.count(where="NOT " * 3000 + "b")
    with pytest.raises(unidb.QueryError, match="malformed filter JSON"):
        Expr.from_json({"op": "and", "args": "ab"})


def test_connect_to_a_regular_file_names_the_path(tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("id\n1\n")
    with pytest.raises(unidb.ValidationError, match="data.csv") as e:
        unidb.connect(f)
    assert "is a file" in str(e.value)
    with pytest.raises(unidb.ValidationError, match="data.csv"):
        unidb.connect(f / "db")
    with pytest.raises(unidb.ValidationError):
        unidb.connect(5)
    assert f.read_text() == "id\n1\n"


QUERY = [1.0, 1.0, 0.0, 0.5]


@pytest.mark.parametrize("step", [
    lambda b: b.limit("x"), lambda b: b.limit(-1), lambda b: b.limit(0),
    lambda b: b.limit(10**12), lambda b: b.limit(2.0), lambda b: b.limit(True),
    lambda b: b.select(5), lambda b: b.select([5]), lambda b: b.select(["nope"]),
    lambda b: b.where(5), lambda b: b.where("nope > 1"), lambda b: b.where(""),
    lambda b: b.distance_range(max=float("nan")), lambda b: b.distance_range(min=2, max=1),
    lambda b: b.distance_range(max="x"), lambda b: b.distance_range(),
])
def test_builder_arguments_raise_unidb_errors(t, step):
    with pytest.raises(unidb.QueryError):
        step(t.search(QUERY))


@pytest.mark.parametrize("call", [
    lambda t: t.search(QUERY, foo=1), lambda t: t.search(QUERY, "v"),
    lambda t: t.search(QUERY, column=5), lambda t: t.search(text=5),
    lambda t: t.search(text="  "), lambda t: t.search(vectors=[QUERY]),
    lambda t: t.search(QUERY, weights={"v": 1.0}),
    lambda t: t.search(vectors={"v": QUERY}, weights={"v": float("nan")}),
    lambda t: t.search(vectors={"v": QUERY}, weights={"nope": 1.0}),
    lambda t: t.search(vectors={"v": QUERY}, weights={"v": -1}),
    lambda t: t.search(vectors={"v": QUERY}, weights={"v": "1"}),
])
def test_search_arguments_raise_query_errors(t, call):
    with pytest.raises(unidb.QueryError):
        call(t)


# -- search knobs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("knobs", [
    {"nprobe": 0}, {"nprobe": "x"}, {"nprobe": 10**12}, {"nprobe": float("nan")},
    {"nprobe": True}, {"nprobe": 2.0}, {"nprobe": MAX_NPROBE + 1}, {"nprob": 3},
    {"budget": -1}, {"budget": 1.5}, {"E": 0}, {"w": "shrinking"}, {"w": 0},
    {"eps2": -0.1}, {"eps2": float("inf")}, {"eps2": "0.5"}, {"max_partitions": 0},
    {"force_plan": "fast"}, {"stop_stat": "max"}, {"schedule": "random"},
    {"batch_size": 0}, {"exact": "yes"}, {"exact": 1}, {"scan_knobs": 3},
    {"scan_knobs": {"nprobe": 3}}, {"scan_knobs": {"batch_partitions": 0}},
])
def test_bad_knobs_fail_when_given_even_without_an_index(t, knobs):
    b = t.search(QUERY)
    with pytest.raises(unidb.QueryError, match="search parameter|unknown"):
        b.params(**knobs)
    assert len(b.limit(3).to_list()) == 3                      # the builder is unchanged


def test_good_knobs_are_accepted_and_none_resets(t):
    b = t.search(QUERY).params(nprobe=np.int64(4), eps2=0, budget=0, E=2, w="growing",
                               force_plan="flat", exact=True, scan_knobs={"batch_partitions": 2})
    assert b.params(nprobe=None).request().params.get("nprobe") is None
    assert len(b.limit(2).to_list()) == 2


def test_nprobe_with_a_filter_on_an_index(db):
    rng = np.random.default_rng(1)
    t = db.create_table("p", {"id": unidb.Int64(primary_key=True), "x": unidb.Float64(),
                              "v": unidb.Vector(8)})
    n = 3000
    t.add({"id": np.arange(n), "x": rng.random(n), "v": rng.random((n, 8)).astype(np.float32)})
    t.create_index("v", kind="partition")
    q = rng.random(8)
    exact = t.search(q).where("x < 0.05").params(exact=True).limit(5).to_list()
    for knobs in ({"nprobe": 2, "force_plan": "index"}, {"max_partitions": 2, "eps2": 0.1}):
        got = t.search(q).where("x < 0.05").params(**knobs).limit(5).to_list()
        assert len(got) == 5                                   # never too few rows
        assert all(r["x"] < 0.05 for r in got)
    assert len(exact) == 5


@pytest.mark.parametrize("fuse", [
    lambda b: b.fuse("rrf", k=-1), lambda b: b.fuse("rrf", k=float("nan")),
    lambda b: b.fuse("rrf", k="60"), lambda b: b.fuse("rrf", kk=3),
    lambda b: b.fuse("linear", weights="x"), lambda b: b.fuse("linear", weights=[1.0]),
    lambda b: b.fuse("linear", weights={"vector": 1, "text": 1, "sparse": 1}),
    lambda b: b.fuse("linear", weights={"vector": -1, "text": 1}),
    lambda b: b.fuse("linear", weights={"vector": float("nan"), "text": 1}),
    lambda b: b.fuse("linear", weights=[1, True]),
    lambda b: b.fuse("linear", normalize="l2"), lambda b: b.fuse("max"),
])
def test_bad_fuse_options_fail_when_given(t, fuse):
    with pytest.raises(unidb.QueryError):
        fuse(t.search(QUERY, text="kettle"))


def test_fuse_weights_by_full_name_are_matched_at_run_time(t):
    b = t.search(QUERY, text="kettle").fuse("linear", weights={"vector:v": 1, "text:nope": 1})
    with pytest.raises(unidb.QueryError, match="text:nope"):
        b.to_list()
    got = t.search(QUERY, text="kettle").fuse("linear", weights={"vector:v": 1, "text": 0.5}) \
        .limit(3).to_list()
    assert len(got) == 3
    assert len(t.search(QUERY, text="kettle").fuse("rrf", k=0).limit(3).to_list()) == 3


# -- silent coercions ------------------------------------------------------------------------------
@pytest.mark.parametrize("row, what", [
    ({"x": float("nan")}, "NaN"), ({"x": True}, "not a number"), ({"n": True}, "not an integer"),
    ({"n": 1.5}, "not an integer"), ({"n": float("nan")}, "NaN"), ({"s": b"abc"}, "not a str"),
    ({"s": 5}, "not a str"), ({"b": 1}, "not a bool"), ({"b": "true"}, "not a bool"),
    ({"title": b"x"}, "not a str"), ({"v": [True, False, True, False]}, "numbers"),
])
def test_values_are_not_coerced_silently(t, row, what):
    before = t.to_arrow()
    with pytest.raises(unidb.ValidationError, match=what):
        t.add([{"id": 100, "v": [0, 0, 0, 1], **row}])
    with pytest.raises(unidb.ValidationError):
        t.update(where="id = 1", values=row)
    assert t.to_arrow().equals(before)


@pytest.mark.parametrize("column, values", [
    ("x", pa.array([True])), ("x", pa.array([float("nan")])), ("s", pa.array([b"a"])),
    ("s", pa.array([1])), ("b", pa.array([1])), ("x", np.array([True])),
    ("b", np.array([1])), ("s", np.array([b"a"])), ("v", np.array([[True] * DIM])),
])
def test_arrow_and_numpy_values_are_not_coerced_silently(t, column, values):
    cols = {"id": [100], "v": [[0.0, 0.0, 0.0, 1.0]], column: values}
    with pytest.raises(unidb.ValidationError, match=f"'{column}'"):
        t.add(cols)
    assert 100 not in _ids(t)


def test_nan_means_missing_only_where_nothing_else_can_say_it(t):
    t.add(pd.DataFrame({"id": [10, 11], "x": [np.nan, 1.5], "n": [np.nan, 3],
                        "v": [[0.0, 0, 0, 1], [0.0, 0, 0, 1]]}))
    got = t.get([10, 11], columns=["x", "n"]).to_pylist()
    assert got == [{"x": None, "n": None}, {"x": 1.5, "n": 3}]
    t.add({"id": [12], "x": np.array([np.nan]), "v": [[0.0, 0, 0, 1]]})
    assert t.get(12, columns=["x"]).to_pylist() == [{"x": None}]
    t.add([{"id": 13, "x": None, "v": [0, 0, 0, 1]}, {"id": 14, "x": math.inf,
                                                      "v": [0, 0, 0, 1]}])
    assert t.get([13, 14], columns=["x"]).column(0).to_pylist() == [None, math.inf]
    assert t.count(where="x IS NULL") == 3


def test_name_arguments_of_the_wrong_type(db, t):
    for bad in (["v"], {"v": 1}, 5):
        with pytest.raises(unidb.ValidationError, match="column name"):
            t.create_index(bad)
        with pytest.raises(unidb.ValidationError, match="column name"):
            t.index_stats(bad)
        with pytest.raises(unidb.ValidationError, match="table name"):
            db.open_table(bad)
        with pytest.raises(unidb.ValidationError, match="table name"):
            db.drop_table(bad)
    with pytest.raises(unidb.SchemaError, match="nullable"):
        db.create_table("z", {"id": unidb.Int64(primary_key=True), "a": unidb.Int64(nullable=1)})
    assert db.table_names() == ["t"]


def test_huge_numbers_are_refused_not_crashed_on(t):
    for big in (10**400, -(10**400)):
        with pytest.raises(unidb.QueryError, match="finite"):
            t.search(QUERY).distance_range(max=big)
        with pytest.raises(unidb.QueryError, match="finite"):
            t.search(QUERY, text="kettle").fuse("rrf", k=big)
        with pytest.raises(unidb.QueryError, match="finite"):
            t.search(QUERY).params(eps2=big)


def test_sorted_index_ranges_with_float_bounds_are_exact(db):
    t = db.create_table("big", {"id": unidb.Int64(primary_key=True), "n": unidb.Int64(),
                                "f": unidb.Float64(), "v": unidb.Vector(2)})
    ns = [2**53 - 1, 2**53, 2**53 + 1, 2**53 + 2, 2**63 - 1, -(2**63), 3, 4]
    fs = [2.0**53, 2.0**53 + 2, 1.5, 2.0**60, -1.0, 0.0, 2.0**53 - 1, 7.0]
    t.add({"id": list(range(len(ns))), "n": ns, "f": fs, "v": [[i, 1.0] for i in range(len(ns))]})
    t.create_index("n")
    t.create_index("f")
    for where in ("n > 9007199254740992.0", "n >= 9007199254740992.5", "n < 9007199254740993.0",
                  "n BETWEEN 2.5 AND 9007199254740992.0", "n <= -9.3e18", "n > 1e19",
                  "f < 9007199254740993", "f >= 9007199254740993", "f = 9007199254740992",
                  "f BETWEEN 2 AND 9007199254740993"):
        want = sorted(r["id"] for r in t.search([0, 1]).where(where).params(exact=True)
                      .limit(100).to_list())
        got = sorted(r["id"] for r in t.search([0, 1]).where(where)
                     .params(force_plan="scalar").limit(100).to_list())
        assert got == want, where
        assert t.count(where=where) == len(want), where


def test_create_table_with_bad_data_leaves_no_table(db):
    schema = {"id": unidb.Int64(primary_key=True), "x": unidb.Float64()}
    with pytest.raises(unidb.ValidationError, match="'x'"):
        db.create_table("d", schema, data=[{"id": 1, "x": "one"}])
    assert "d" not in db.table_names()
    assert len(db.create_table("d", schema, data=[{"id": 1, "x": 1.0}])) == 1


def test_query_vectors_must_be_numbers(t):
    for bad in ([True, False, True, False], ["1", "2", "3", "4"], [None, 1, 2, 3]):
        with pytest.raises(unidb.ValidationError, match="must be numbers"):
            t.search(bad).to_list()
