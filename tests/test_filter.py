"""The filter language: both spellings, three-valued evaluation, validation, errors, round trips.

Evaluation is checked against `reference`, a plain-Python three-valued evaluator written
independently of unidb/query/filter.py (None stands for SQL's unknown).
"""
from __future__ import annotations

import json
import operator
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unidb.errors import QueryError
from unidb.query.filter import (And, Between, Column, Compare, Expr, InList, IsNull, Like,
                                Literal, Match, Not, Or, col, lit, match, parse_filter, to_expr)
from unidb.schema import Bool, Float64, Int64, Schema, SparseVector, String, Text, Vector

# ---------------------------------------------------------------------------------------------
# A small table with nulls in every column, and a plain-Python reference evaluator
# ---------------------------------------------------------------------------------------------

ARROW_TYPES = {"i": pa.int64(), "x": pa.float64(), "s": pa.string(), "b": pa.bool_(),
               "order": pa.int64(), "match": pa.string()}
ROWS = [
    {"i": 1, "x": 1.5, "s": "apple", "b": True, "order": 3, "match": "a"},
    {"i": 2, "x": None, "s": "Apple", "b": False, "order": None, "match": "b"},
    {"i": None, "x": 2.0, "s": None, "b": None, "order": 1, "match": None},
    {"i": 4, "x": -1.0, "s": "banana", "b": True, "order": 4, "match": "it's"},
    {"i": -3, "x": 4.0, "s": "a%b", "b": None, "order": -3, "match": "a_b"},
    {"i": 0, "x": 0.0, "s": "it's", "b": False, "order": 0, "match": "z"},
    {"i": None, "x": None, "s": "", "b": True, "order": None, "match": ""},
]


def make_table(rows: list[dict]) -> pa.Table:
    """Rows -> Arrow table with fixed column types and a `_rowid` column 100, 101, ..."""
    cols = {name: pa.array([r[name] for r in rows], type=t) for name, t in ARROW_TYPES.items()}
    cols["_rowid"] = pa.array(range(100, 100 + len(rows)), type=pa.int64())
    return pa.table(cols)


TABLE = make_table(ROWS)
SCHEMA = Schema({"id": Int64(primary_key=True), "i": Int64(nullable=True),
                 "x": Float64(nullable=True), "s": Text(nullable=True),
                 "b": Bool(nullable=True), "order": Int64(nullable=True),
                 "match": String(nullable=True), "title": Text(), "emb": Vector(dim=3),
                 "sv": SparseVector()})


class FakeIndex:
    """Stands in for a full-text index: a query matches the row ids it divides by len(query)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def match_mask(self, column: str, query: str, row_ids: np.ndarray) -> np.ndarray:
        self.calls.append((column, query))
        return fake_match(query, row_ids)


def fake_match(query: str, row_ids):
    return np.asarray(row_ids) % max(1, len(query)) == 0


PY_COMPARE = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
              ">": operator.gt, ">=": operator.ge}


def like_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def kleene_and(values):
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def kleene_or(values):
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def reference(e: Expr, row: dict):
    """SQL three-valued result of `e` on one row: True, False or None (unknown)."""
    if isinstance(e, Column):
        return row[e.name]
    if isinstance(e, Literal):
        return e.value
    if isinstance(e, Compare):
        a, b = reference(e.left, row), reference(e.right, row)
        return None if a is None or b is None else PY_COMPARE[e.op](a, b)
    if isinstance(e, InList):
        v = row[e.column.name]
        if not e.values:
            return False
        return None if v is None else any(v == w for w in e.values)
    if isinstance(e, Between):
        v = row[e.column.name]
        return kleene_and([None if v is None else e.low <= v, None if v is None else v <= e.high])
    if isinstance(e, IsNull):
        return row[e.column.name] is None
    if isinstance(e, Like):
        v = row[e.column.name]
        return None if v is None else like_regex(e.pattern).fullmatch(v) is not None
    if isinstance(e, Match):
        return bool(fake_match(e.query, [row["_rowid"]])[0])
    if isinstance(e, Not):
        v = reference(e.operand, row)
        return None if v is None else not v
    if isinstance(e, And):
        return kleene_and([reference(t, row) for t in e.terms])
    if isinstance(e, Or):
        return kleene_or([reference(t, row) for t in e.terms])
    raise AssertionError(f"unknown node {e!r}")


def reference_mask(e: Expr, rows: list[dict]) -> np.ndarray:
    with_ids = [dict(r, _rowid=100 + k) for k, r in enumerate(rows)]
    return np.array([reference(e, r) is True for r in with_ids], dtype=bool)


def selected(e: Expr, table: pa.Table = TABLE) -> list[int]:
    """Row numbers `e` selects, after checking the mask against the reference evaluator."""
    mask = e.evaluate(table, FakeIndex())
    assert mask.dtype == bool and mask.shape == (table.num_rows,)
    rows = ROWS if table is TABLE else table.to_pylist()
    assert mask.tolist() == reference_mask(e, rows).tolist()
    return np.flatnonzero(mask).tolist()


# ---------------------------------------------------------------------------------------------
# Every operator in both spellings: same tree, expected rows, reference agrees
# ---------------------------------------------------------------------------------------------

CASES = [
    # text, builder, expected selected rows
    ("i = 2", col("i") == 2, [1]),
    ("i != 2", col("i") != 2, [0, 3, 4, 5]),
    ("i <> 2", col("i") != 2, [0, 3, 4, 5]),
    ("i < 2", col("i") < 2, [0, 4, 5]),
    ("i <= 2", col("i") <= 2, [0, 1, 4, 5]),
    ("i > 0", col("i") > 0, [0, 1, 3]),
    ("i >= 0", col("i") >= 0, [0, 1, 3, 5]),
    ("i > -3", col("i") > -3, [0, 1, 3, 5]),
    ("x < 1.75", col("x") < 1.75, [0, 3, 5]),
    ("x >= 2", col("x") >= 2, [2, 4]),                 # float column vs int literal
    ("i = 1.0", col("i") == 1.0, [0]),                 # int column vs float literal
    ("i < x", col("i") < col("x"), [0, 4]),            # column vs column
    ("2 < i", lit(2) < col("i"), [3]),
    ("s = 'apple'", col("s") == "apple", [0]),         # case-sensitive
    ("s = 'it''s'", col("s") == "it's", [5]),
    ("s > 'a'", col("s") > "a", [0, 3, 4, 5]),
    ("b = TRUE", col("b") == True, [0, 3, 6]),  # noqa: E712 - builds a predicate
    ("b = FALSE", col("b") == False, [1, 5]),  # noqa: E712
    ("b", col("b") == True, [0, 3, 6]),  # noqa: E712 - a bare Bool column
    ("i > 0 AND b", (col("i") > 0) & col("b"), [0, 3]),
    ("i > 0 AND x > 0", (col("i") > 0) & (col("x") > 0), [0]),
    ("i > 1 OR b", (col("i") > 1) | col("b"), [0, 1, 3, 6]),
    ("NOT i > 1", ~(col("i") > 1), [0, 4, 5]),
    ("NOT (i > 1 OR s = 'apple')", ~((col("i") > 1) | (col("s") == "apple")), [4, 5]),
    ("i IN (1, 4, 7)", col("i").isin([1, 4, 7]), [0, 3]),
    ("i IN (2.0, 2.5)", col("i").isin([2.0, 2.5]), [1]),
    ("i NOT IN (1, 4)", ~col("i").isin([1, 4]), [1, 4, 5]),
    ("i IN ()", col("i").isin([]), []),
    ("i NOT IN ()", ~col("i").isin([]), [0, 1, 2, 3, 4, 5, 6]),
    ("s IN ('apple', 'banana')", col("s").isin(["apple", "banana"]), [0, 3]),
    ("b IN (FALSE)", col("b").isin([False]), [1, 5]),
    ("x BETWEEN -1 AND 1.5", col("x").between(-1, 1.5), [0, 3, 5]),
    ("x NOT BETWEEN -1 AND 1.5", ~col("x").between(-1, 1.5), [2, 4]),
    ("s BETWEEN 'a' AND 'b'", col("s").between("a", "b"), [0, 4]),
    ("i IS NULL", col("i").is_null(), [2, 6]),
    ("i IS NOT NULL", col("i").is_not_null(), [0, 1, 3, 4, 5]),
    ("s LIKE 'a%'", col("s").like("a%"), [0, 4]),
    ("s LIKE '_pple'", col("s").like("_pple"), [0, 1]),
    ("s NOT LIKE '%a%'", ~col("s").like("%a%"), [1, 5, 6]),
    ("s LIKE 'a\\%b'", col("s").like("a\\%b"), [4]),   # backslash escapes %
    ("s LIKE 'APPLE'", col("s").like("APPLE"), []),    # LIKE is case-sensitive
    ("MATCH(s, 'ab')", match("s", "ab"), [0, 2, 4, 6]),
    ("MATCH(s, 'abc') OR i > 3", match("s", "abc") | (col("i") > 3), [2, 3, 5]),
    ("(i = 1 OR i = 2) AND (b OR x > 0)",
     ((col("i") == 1) | (col("i") == 2)) & (col("b") | (col("x") > 0)), [0]),
    ('"order" > 0 AND "match" = \'a\'', (col("order") > 0) & (col("match") == "a"), [0]),
    ("order >= 3", col("order") >= 3, [0, 3]),          # a SQL keyword used as a column name
]


@pytest.mark.parametrize("text,built,expected", CASES, ids=[c[0] for c in CASES])
def test_operator_both_spellings(text, built, expected):
    parsed = parse_filter(text)
    assert parsed.same_as(to_expr(built)), (parsed, built)
    assert selected(parsed) == expected
    assert selected(to_expr(built)) == expected
    assert parse_filter(parsed.to_sql()).same_as(parsed)
    assert Expr.from_json(json.loads(json.dumps(parsed.to_json()))).same_as(parsed)


def test_three_valued_logic_with_nulls():
    # Row 2 has i NULL: i > 1 is unknown, so neither it nor its negation selects the row.
    assert 2 not in selected(parse_filter("i > 1")) + selected(parse_filter("NOT i > 1"))
    # unknown AND false = false; unknown OR true = true; unknown OR false = unknown.
    assert selected(parse_filter("i > 1 OR x = 2.0")) == [1, 2, 3]
    assert 2 not in selected(parse_filter("NOT (i > 1 AND b)"))
    # Row 1: i > 1 is true but x = 99 unknown (x NULL); row 6: both unknown.
    assert selected(parse_filter("NOT (i > 1 AND x = 99)")) == [0, 2, 3, 4, 5]
    assert selected(parse_filter("NOT (i > 1 OR x = 99)")) == [0, 4, 5]


def test_keywords_case_insensitive_and_whitespace():
    e = parse_filter("  i\tbetween 1 and 2\nor NOT s like 'a%'  ")
    assert e.same_as(col("i").between(1, 2) | ~col("s").like("a%"))


def test_precedence_not_and_or():
    assert parse_filter("NOT b AND i = 1 OR x = 2").same_as(
        (~col("b") & (col("i") == 1)) | (col("x") == 2))
    assert parse_filter("i = 1 OR i = 2 AND b").same_as(
        (col("i") == 1) | ((col("i") == 2) & col("b")))


def test_flattening_makes_grouping_irrelevant():
    a, b, c = col("i") == 1, col("i") == 2, col("i") == 3
    assert ((a & b) & c).same_as(a & (b & c))
    assert parse_filter("i = 1 AND (i = 2 AND i = 3)").same_as(a & b & c)
    assert len((a | b | c).terms) == 3


def test_literal_spellings():
    assert parse_filter("x = -1.5e3").same_as(col("x") == -1500.0)
    assert parse_filter("x = - 2").same_as(col("x") == -2)
    assert parse_filter("i = -9223372036854775808").same_as(col("i") == -(1 << 63))
    assert parse_filter("s = 'a\\b'").same_as(col("s") == "a\\b")    # backslash is literal
    assert parse_filter("s = ''").same_as(col("s") == "")
    # 1, 1.0 and TRUE are different literals
    assert not (col("i") == 1).same_as(col("i") == 1.0)
    assert not (col("i") == 1).same_as(col("i") == True)  # noqa: E712


def test_numpy_scalars_become_literals():
    assert (col("i") == np.int64(2)).same_as(col("i") == 2)
    assert col("x").isin(np.array([1.5, 2.0])).same_as(col("x").isin([1.5, 2.0]))


def test_int_column_in_list_is_exact_for_large_ids():
    big = (1 << 62) + 1     # float64 would round this onto its neighbour
    t = pa.table({"i": pa.array([big, big - 1], type=pa.int64())})
    assert parse_filter(f"i IN ({big})").evaluate(t).tolist() == [True, False]
    assert parse_filter(f"i = {big}").evaluate(t).tolist() == [True, False]


def test_columns():
    e = parse_filter("i > 1 AND (s LIKE 'a%' OR MATCH(title, 'q')) AND x < i")
    assert e.columns() == {"i", "s", "title", "x"}


def test_positions_kept_on_parsed_columns():
    e = parse_filter("i = 1 AND  s = 'a'")
    assert [c.position for c in e.walk() if isinstance(c, Column)] == [0, 11]


# ---------------------------------------------------------------------------------------------
# Evaluation over different inputs
# ---------------------------------------------------------------------------------------------

def test_record_batch_multi_chunk_and_empty_inputs():
    e = parse_filter("i >= 0 AND s IS NOT NULL")
    expect = e.evaluate(TABLE).tolist()
    assert e.evaluate(TABLE.to_batches()[0]).tolist() == expect
    chunked = pa.concat_tables([TABLE.slice(0, 3), TABLE.slice(3)])
    assert chunked.column("i").num_chunks == 2
    assert e.evaluate(chunked).tolist() == expect
    empty = e.evaluate(TABLE.slice(0, 0))
    assert empty.dtype == bool and empty.shape == (0,)


def test_match_calls_the_context_with_row_ids():
    idx = FakeIndex()
    mask = parse_filter("MATCH(s, 'ab')").evaluate(TABLE, idx)
    assert idx.calls == [("s", "ab")]
    assert mask.tolist() == (np.arange(100, 107) % 2 == 0).tolist()


def test_match_without_index_is_a_clear_error():
    with pytest.raises(QueryError, match="needs a full-text index on column 's'"):
        parse_filter("MATCH(s, 'ab')").evaluate(TABLE)
    with pytest.raises(QueryError, match="full-text index"):
        match("s", "ab").evaluate(TABLE, context=object())


def test_evaluation_on_a_million_rows_is_vectorised():
    n = 1_000_000
    rng = np.random.default_rng(7)
    price = rng.uniform(0, 1000, n)
    cat = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)]
    valid = rng.random(n) > 0.1
    table = pa.table({"price": pa.array(price, mask=~valid), "category": pa.array(cat)})
    e = parse_filter("price < 200 AND category IN ('a', 'b')")
    mask = e.evaluate(table)
    expect = valid & (price < 200) & np.isin(cat, ["a", "b"])
    assert mask.shape == (n,) and int(mask.sum()) == int(expect.sum())
    assert np.array_equal(mask, expect)


# ---------------------------------------------------------------------------------------------
# Validation against a schema
# ---------------------------------------------------------------------------------------------

def test_validate_accepts_well_typed_filters():
    parse_filter("i > 1 AND x < 2.5 AND s IN ('a') AND b AND title LIKE 'x%' "
                 "AND MATCH(title, 'aspirin') AND emb IS NOT NULL AND _rowid < 10 "
                 "AND i < x AND order = 3 AND \"match\" = 'm'").validate(SCHEMA)


@pytest.mark.parametrize("text,words", [
    ("pricee < 3", ["unknown column 'pricee'", "position 0", "id, i, x, s, b"]),
    ("i = 1 AND nope = 2", ["unknown column 'nope'", "position 10"]),
    ("x < 'abc'", ["'x'", "Float64", "'abc'"]),
    ('"match" = 3', ["'match'", "String", "3"]),
    ("b = 1", ["'b'", "Bool", "1"]),
    ("s IN ('a') OR i IN ('a', 'b')", ["'i'", "Int64", "'a'", "position 14"]),
    ("x BETWEEN 'a' AND 'b'", ["'x'", "Float64", "'a'"]),
    ("i LIKE '1%'", ["LIKE", "'i'", "Int64"]),
    ("emb = 1", ["'emb'", "Vector", "cannot compare vectors"]),
    ("sv != 3", ["'sv'", "SparseVector"]),
    ("s = i", ["'s'", "'i'"]),
    ('MATCH("match", \'q\')', ["MATCH needs a Text column", "'match'", "String"]),
    ("_distance < 1", ["'_distance'", "reserved", "_rowid"]),
    ("x", ["'x'", "Float64", "TRUE"]),          # a bare column is a condition only if Bool
])
def test_validate_errors_name_column_literal_and_type(text, words):
    with pytest.raises(QueryError) as info:
        parse_filter(text).validate(SCHEMA)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert info.value.position is not None


def test_validate_builder_expr_has_no_position():
    with pytest.raises(QueryError, match="unknown column 'zz'") as info:
        (col("zz") > 1).validate(SCHEMA)
    assert info.value.position is None


# ---------------------------------------------------------------------------------------------
# Errors: text
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,position,words", [
    ("", 0, ["empty filter"]),
    ("   \n\t", 0, ["empty filter"]),
    ("price < AND 3", 8, ["unexpected token 'AND' at position 8", "price < AND 3"]),
    ("(i = 1 OR b", 11, ["unexpected end", "')'", "position 0"]),
    ("i = 1)", 5, ["unexpected token ')'"]),
    ("i = 1 AND", 9, ["unexpected end of filter at position 9"]),
    ("i = 1 OR OR b", 9, ["'OR'"]),
    ("i =", 3, ["unexpected end"]),
    ("NOT", 3, ["unexpected end"]),
    ("s = 'abc", 4, ["unclosed quote at position 4"]),
    ("i = 1 /* note", 6, ["unclosed comment"]),
    ("foo(i) = 1", 0, ["unsupported function 'foo'", "MATCH"]),
    ("lower(s) = 'a'", 0, ["unsupported function 'lower'"]),
    ("i + 1 > 2", 2, ["'+'"]),
    ("i = (SELECT 1)", 4, ["'('"]),
    ("i = 1; DROP TABLE t", 5, ["';'"]),
    ("i b", 2, ["'b'"]),
    ("i = NULL", 4, ["IS NULL"]),
    ("1 = 2", 4, ["needs a column"]),
    ("42", 0, ["literal alone"]),
    ("i IS 3", 5, ["NULL"]),
    ("s LIKE 3", 7, ["LIKE pattern"]),
    ("i BETWEEN 1 2", 12, ["AND"]),
    ("i IN 1, 2", 5, ["'('"]),
    ("i IN (1 2)", 8, ["',' or ')'"]),
    ("MATCH(s)", 7, ["','"]),
    ("MATCH('s', 'q')", 6, ["column name"]),
    ("t.i = 1", 1, ["'.'"]),
    ("i = $1", 4, ["'$'"]),
    ("i = 99999999999999999999", 4, ["64-bit"]),
    ("i NOT = 1", 2, ["'NOT'"]),
    ("(" * 150 + "b" + ")" * 150, 100, ["deeper than 100"]),
])
def test_parse_errors_have_position_and_quote_the_token(text, position, words):
    with pytest.raises(QueryError) as info:
        parse_filter(text)
    assert info.value.position == position, str(info.value)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_long_filter_error_quotes_only_an_excerpt():
    text = " OR ".join(f"i = {k}" for k in range(2000)) + " OR"
    with pytest.raises(QueryError) as info:
        parse_filter(text)
    assert info.value.position == len(text) and len(str(info.value)) < 500


def test_mixed_type_in_list_is_rejected():
    with pytest.raises(QueryError, match="mixes"):
        parse_filter("i IN (1, 'a')")
    with pytest.raises(QueryError, match="mixes"):
        col("i").isin([1, "a"])


# ---------------------------------------------------------------------------------------------
# Errors: builder misuse
# ---------------------------------------------------------------------------------------------

def test_python_and_or_not_raise():
    a, b = col("i") > 1, col("x") < 2
    with pytest.raises(QueryError, match="& .*\\|.*~"):
        a and b                              # noqa: B015 - the misuse under test
    with pytest.raises(QueryError, match="no truth value"):
        a or b                               # noqa: B015
    with pytest.raises(QueryError, match="no truth value"):
        not a                                # noqa: B015
    with pytest.raises(QueryError, match="chained"):
        1 < col("i") < 5                     # noqa: B015
    with pytest.raises(QueryError, match="no truth value"):
        if col("i") == 3:
            pass


def test_trees_compare_with_same_as_and_are_unhashable():
    a = col("i") > 1
    with pytest.raises(QueryError, match="same_as"):
        a == (col("i") > 1)                  # noqa: B015
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(TypeError):
        hash(col("i"))
    assert a.same_as(col("i") > 1) and not a.same_as(col("i") >= 1)


@pytest.mark.parametrize("make,words", [
    (lambda: col("i") == None, "is_null"),          # noqa: E711
    (lambda: col("x") < float("nan"), "not finite"),
    (lambda: col("i") < 1 << 70, "64-bit"),
    (lambda: col("i") == [1, 2], "not supported"),
    (lambda: col("i").isin("abc"), "list"),
    (lambda: col("s").like(3), "string pattern"),
    (lambda: col(""), "non-empty"),
    (lambda: lit(1) == 2, "no column"),
    (lambda: ~lit(1), "not a condition"),
    (lambda: (col("i") > 1) & 3, "both sides"),
    (lambda: match("title", None), "string"),
])
def test_builder_errors(make, words):
    with pytest.raises(QueryError, match=words):
        make()


def test_to_expr():
    e = col("i") > 1
    assert to_expr(None) is None
    assert to_expr(e) is e
    assert to_expr("i > 1").same_as(e)
    assert to_expr(col("b")).same_as(col("b") == True)  # noqa: E712
    with pytest.raises(QueryError, match="dict"):
        to_expr({"i": 1})
    with pytest.raises(QueryError, match="empty"):
        to_expr("")


def test_from_json_rejects_malformed():
    for bad in [[], {"op": "nope"}, {"op": "<", "left": {"column": "i"}},
                {"op": "and", "args": [{"column": "b"}]},
                {"op": "<", "left": {"op": "is_null", "column": "i"}, "right": {"literal": 1}}]:
        with pytest.raises(QueryError, match="malformed|no column"):
            Expr.from_json(bad)


# ---------------------------------------------------------------------------------------------
# bounds_for: the range a sorted index may scan
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,bounds", [
    ("x < 5", (None, 5, False, False)),
    ("x >= 1.5", (1.5, None, True, False)),
    ("3 < x", (3, None, False, False)),
    ("x = 2", (2, 2, True, True)),
    ("x BETWEEN 1 AND 9", (1, 9, True, True)),
    ("x > 1 AND x <= 9 AND s = 'a'", (1, 9, False, True)),
    ("x BETWEEN 1 AND 9 AND x < 5 AND x > 1", (1, 5, False, False)),
    ("x >= 2 AND x > 2", (2, None, False, False)),
    ("x > 1 AND i < 0", (1, None, False, False)),
    ("s = 'a' AND i < 0", None),
    ("x > 1 OR x < 0", None),
    ("NOT x > 1", None),
    ("x != 3", None),
    ("x < i", None),
    ("x IN (1, 2)", None),
])
def test_bounds_for(text, bounds):
    assert parse_filter(text).bounds_for("x") == bounds


# ---------------------------------------------------------------------------------------------
# Property tests: random trees round-trip through text and JSON and agree with the reference
# ---------------------------------------------------------------------------------------------

NUMBER_COLUMNS = ["i", "x", "order"]
STRING_COLUMNS = ["s", "match"]
ints = st.integers(-50, 50) | st.sampled_from([-(1 << 53), 1 << 53])
floats = (st.floats(-100, 100, allow_nan=False, allow_infinity=False)
          | st.sampled_from([0.1, -0.0, 1e-07, 2.5e16]))
numbers = ints | floats
texts = st.text(alphabet="abAB%_' \\é\n", max_size=5)
patterns = st.text(alphabet="abA%_", max_size=4)


def number_predicates() -> st.SearchStrategy:
    c = st.sampled_from(NUMBER_COLUMNS).map(col)
    ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
    return st.one_of(
        st.builds(lambda c, op, v: Compare(op, c, Literal(v)), c, ops, numbers),
        st.builds(lambda c, op, v: Compare(op, Literal(v), c), c, ops, numbers),
        st.builds(lambda a, op, b: Compare(op, a, b), c, ops, c),
        st.builds(lambda c, vs: c.isin(vs), c, st.lists(numbers, max_size=4)),
        st.builds(lambda c, lo, hi: c.between(lo, hi), c, numbers, numbers),
        st.builds(lambda c: c.is_null(), c),
    )


def string_predicates() -> st.SearchStrategy:
    c = st.sampled_from(STRING_COLUMNS).map(col)
    ops = st.sampled_from(["=", "!=", "<", ">="])
    return st.one_of(
        st.builds(lambda c, op, v: Compare(op, c, Literal(v)), c, ops, texts),
        st.builds(lambda c, vs: c.isin(vs), c, st.lists(texts, max_size=3)),
        st.builds(lambda c, p: c.like(p), c, patterns),
        st.builds(lambda c: c.is_not_null(), c),
        st.builds(lambda q: match("s", q), st.sampled_from(["a", "ab", "abc"])),
    )


def bool_predicates() -> st.SearchStrategy:
    return st.one_of(
        st.just(col("b") == True),  # noqa: E712
        st.builds(lambda v: col("b") != v, st.booleans()),
        st.builds(lambda vs: col("b").isin(vs), st.lists(st.booleans(), max_size=2)),
    )


leaves = number_predicates() | string_predicates() | bool_predicates()
trees = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.builds(lambda e: ~e, kids),
        st.builds(lambda a, b: a & b, kids, kids),
        st.builds(lambda a, b: a | b, kids, kids),
    ),
    max_leaves=8,
)


def maybe(values) -> st.SearchStrategy:
    return st.none() | values


rows = st.lists(st.fixed_dictionaries({
    "i": maybe(ints), "x": maybe(floats), "order": maybe(st.integers(-3, 3)),
    "s": maybe(texts), "match": maybe(texts), "b": maybe(st.booleans())}), max_size=12)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, data=rows)
def test_random_trees_round_trip_and_match_reference(tree, data):
    text = tree.to_sql()
    parsed = parse_filter(text)
    assert parsed.same_as(tree), (text, parsed.to_json(), tree.to_json())
    assert Expr.from_json(json.loads(json.dumps(tree.to_json()))).same_as(tree)
    parsed.validate(SCHEMA)
    table = make_table(data)
    expect = reference_mask(tree, data)
    assert tree.evaluate(table, FakeIndex()).tolist() == expect.tolist(), text
    assert parsed.evaluate(table, FakeIndex()).tolist() == expect.tolist(), text


@settings(max_examples=100, deadline=None)
@given(tree=trees)
def test_bounds_are_sound(tree):
    """Every row a filter selects lies inside the bounds it reports for a column."""
    b = tree.bounds_for("i")
    if b is None:
        return
    lo, hi, lo_inc, hi_inc = b
    for k, row in enumerate(ROWS):
        if reference(tree, dict(row, _rowid=100 + k)) is True:
            v = row["i"]
            assert lo is None or v > lo or (lo_inc and v == lo)
            assert hi is None or v < hi or (hi_inc and v == hi)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ibsx ()'=<>!,-.0123456789%_ANDORTIKELUSBW", max_size=30))
def test_arbitrary_text_parses_or_raises_query_error(text):
    """No input makes the parser fail with anything but QueryError carrying a position."""
    try:
        e = parse_filter(text)
    except QueryError as err:
        assert err.position is not None and 0 <= err.position <= len(text)
    else:
        assert parse_filter(e.to_sql()).same_as(e)
