"""Filter trees: the one tree both filter spellings build, and its evaluation over Arrow.

`parse_filter("price < 200 AND category IN ('a', 'b')")` and
`(col("price") < 200) & col("category").isin(["a", "b"])` build the same tree of the small
frozen dataclasses below. A tree can check itself against a table schema (`validate`), select
rows of an Arrow batch with SQL three-valued logic (`evaluate`), print itself as canonical filter
text (`to_sql`, which `parse_filter` reads back to the same tree) and travel as JSON.

`==` on a column builds a predicate, so trees are compared with `same_as`, not `==`, and are not
hashable. The text grammar (unidb/query/filter_parse.py) builds these nodes, so it imports this
module and never the other way; unidb/query/filter.py puts the two together.
"""
from __future__ import annotations

import json
import math
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from unidb.errors import QueryError
from unidb.query.compare import COMPARE_KERNELS, FLIPPED, compare
from unidb.schema import RESERVED_PREFIX, Bool, Float64, Int64, Schema, String, Text

LiteralValue = Union[bool, int, float, str]
Bounds = tuple[Union[int, float, None], Union[int, float, None], bool, bool]

# The one reserved column a filter may name: every row's internal id, an Int64.
ROWID = "_rowid"
ROWID_TYPE = Int64()
# Literals are compared with Int64 columns by Arrow; a Python int outside this range has no
# Arrow scalar type to meet them in, so it is refused when the literal is built.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# Deepest nesting of NOT / AND / OR a filter tree may have. Deeper trees are generated or
# hostile, and every walk over a tree (check, evaluate, print) recurses once per level, so a
# bound far below Python's recursion limit turns them into a QueryError, never a RecursionError.
MAX_DEPTH = 100
# A column name prints bare when it reads back as itself: a plain identifier that is none of
# the grammar's words (unidb/query/filter_parse.py); any other name is double-quoted.
RESERVED_NAMES = {"AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL", "LIKE", "TRUE", "FALSE",
                  "MATCH"}
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MatchContext(Protocol):
    """What evaluating MATCH needs: the full-text index's answer for the given row ids."""

    def match_mask(self, column: str, query: str, row_ids: np.ndarray) -> np.ndarray: ...


def _at(position: int | None) -> str:
    return "" if position is None else f" at position {position}"


def _kind(value: LiteralValue) -> str:
    """The filter-level type of a literal: 'bool', 'number' or 'string'."""
    if isinstance(value, bool):
        return "bool"
    return "string" if isinstance(value, str) else "number"


def _column_kind(ctype: Any) -> str:
    """The filter-level type of a column type; 'vector' columns cannot be compared."""
    if isinstance(ctype, Bool):
        return "bool"
    if isinstance(ctype, (Int64, Float64)):
        return "number"
    return "string" if isinstance(ctype, String) else "vector"


def _arrow_kind(dtype: pa.DataType) -> str:
    """The filter-level type of an Arrow column type, as _kind names a literal's."""
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        return "number"
    return "string" if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) else "other"


def _sql_literal(value: LiteralValue) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)      # repr of a float is the shortest text that reads back exactly


def coerce_literal(value: Any) -> LiteralValue:
    """Check a Python value for use as a filter literal; numpy scalars become Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        raise QueryError("a filter cannot compare with None (NULL is never equal to anything); "
                         "use .is_null() / .is_not_null(), or IS NULL in text")
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise QueryError(f"integer literal {value} is outside the 64-bit range of Int64")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QueryError(f"float literal {value!r} is not finite; filters take finite numbers")
        return value
    raise QueryError(f"filter literal {value!r} of type {type(value).__name__} is not supported; "
                     f"use a bool, int, float or str")


def quote_name(name: str) -> str:
    """A column name as filter text: bare when it reads back as itself, else double-quoted."""
    if PLAIN_NAME.fullmatch(name) and name.upper() not in RESERVED_NAMES:
        return name
    return '"' + name.replace('"', '""') + '"'


class Expr:
    """A node of a filter tree. Combine with & | ~; never with Python's and/or/not."""

    __hash__ = None  # type: ignore[assignment]  # `==` builds predicates, so no hashing
    depth = 0        # NOT / AND / OR levels at and below this node (see MAX_DEPTH)

    def __eq__(self, other: object) -> Any:
        raise QueryError("filter trees are compared with a.same_as(b), not ==; "
                         "to build a predicate use col(name) == value")

    __ne__ = __eq__

    def __bool__(self) -> bool:
        raise QueryError("a filter has no truth value: combine filters with & (and), | (or), "
                         "~ (not) and parentheses, e.g. (col('a') > 1) & (col('b') < 2); Python's "
                         "and/or/not and chained comparisons like 1 < col('a') < 5 do not work")

    def __and__(self, other: Any) -> "Expr":
        return and_(self, _need_expr(other, "&"))

    def __rand__(self, other: Any) -> "Expr":
        return and_(_need_expr(other, "&"), self)

    def __or__(self, other: Any) -> "Expr":
        return or_(self, _need_expr(other, "|"))

    def __ror__(self, other: Any) -> "Expr":
        return or_(_need_expr(other, "|"), self)

    def __invert__(self) -> "Expr":
        return Not(as_predicate(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_sql()!r})"

    # -- structure ------------------------------------------------------------------------
    def children(self) -> tuple["Expr", ...]:
        """The direct sub-expressions of this node."""
        return ()

    def walk(self) -> Iterator["Expr"]:
        """This node and every node below it, parents first."""
        yield self
        for child in self.children():
            yield from child.walk()

    def columns(self) -> set[str]:
        """Names of the columns this filter reads."""
        return {n.name for n in self.walk() if isinstance(n, Column)}

    def same_as(self, other: "Expr") -> bool:
        """Structural equality: same nodes, operators and literals (1, 1.0 and TRUE differ)."""
        return isinstance(other, Expr) and _canonical(self) == _canonical(other)

    # -- checking and evaluation -------------------------------------------------------------
    def validate(self, schema: Schema) -> None:
        """Raise QueryError if a column is unknown or a literal does not fit its column's type."""
        for node in self.walk():
            node._check(schema)

    def _check(self, schema: Schema) -> None:
        pass

    def evaluate(self, data: pa.Table | pa.RecordBatch,
                 context: MatchContext | None = None) -> np.ndarray:
        """Bool mask of the rows this filter selects; rows where it is unknown (NULL) are not."""
        predicate = as_predicate(self)
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        masks = [np.zeros(0, dtype=bool)]
        for batch in batches:
            try:
                result = predicate._eval(batch, context)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise QueryError(f"filter {predicate.to_sql()} cannot be evaluated on this data "
                                 f"({e}); check that literals match the column types") from e
            masks.append(np.asarray(result.fill_null(False).to_numpy(zero_copy_only=False),
                                    dtype=bool))
        return np.concatenate(masks)

    def _eval(self, batch: pa.RecordBatch, context: Any) -> Any:
        """Three-valued result over one batch: an Arrow bool array with nulls for unknown."""
        raise NotImplementedError

    # -- serialisation -----------------------------------------------------------------------
    def to_sql(self) -> str:
        """Canonical filter text; parse_filter(e.to_sql()) builds a tree same_as e."""
        raise NotImplementedError

    def to_json(self) -> dict:
        """A JSON-ready dict; Expr.from_json reads it back."""
        raise NotImplementedError

    @staticmethod
    def from_json(d: Any) -> "Expr":
        """The tree a to_json dict describes; QueryError if it is malformed."""
        return _from_json(d)

    # -- planning ----------------------------------------------------------------------------
    def bounds_for(self, column: str) -> Bounds | None:
        """(lo, hi, lo_inclusive, hi_inclusive) that every selected row's `column` lies in,
        read from range comparisons AND-ed at the top; None bound = open; None if unknown."""
        return None


def _set_depth(node: Expr, children: Iterable[Expr]) -> None:
    """Record a connective's depth, refusing trees nested deeper than MAX_DEPTH."""
    depth = 1 + max((c.depth for c in children), default=0)
    if depth > MAX_DEPTH:
        raise QueryError(f"filter nests deeper than {MAX_DEPTH} levels of NOT / AND / OR; "
                         f"flatten it (a & b & c is one level, isin() replaces long OR chains)")
    object.__setattr__(node, "depth", depth)


def _need_expr(value: Any, op: str) -> Expr:
    if not isinstance(value, Expr):
        raise QueryError(f"cannot combine a filter with {value!r} using {op}; both sides of "
                         f"& and | must be filters like col('a') > 1")
    return value


def _canonical(e: Expr) -> str:
    # JSON text keeps 1, 1.0 and true apart, which dict equality would not.
    return json.dumps(e.to_json(), sort_keys=True)


class Operand(Expr):
    """A value-producing node (column or literal); its comparison operators build Compare."""

    def __eq__(self, other: Any) -> "Compare":  # type: ignore[override]
        return Compare.build("=", self, other)

    def __ne__(self, other: Any) -> "Compare":  # type: ignore[override]
        return Compare.build("!=", self, other)

    def __lt__(self, other: Any) -> "Compare":
        return Compare.build("<", self, other)

    def __le__(self, other: Any) -> "Compare":
        return Compare.build("<=", self, other)

    def __gt__(self, other: Any) -> "Compare":
        return Compare.build(">", self, other)

    def __ge__(self, other: Any) -> "Compare":
        return Compare.build(">=", self, other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False, repr=False)
class Column(Operand):
    """A column reference; `position` is where it stood in filter text, for error messages."""
    name: str
    position: int | None = field(default=None)

    def isin(self, values: Iterable[Any]) -> "InList":
        """Rows whose value is one of `values` (an empty list selects nothing)."""
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise QueryError(f"isin() takes a list of values, got {values!r}")
        return InList(self, tuple(values))

    def between(self, low: Any, high: Any) -> "Between":
        """Rows with low <= value <= high."""
        return Between(self, low, high)

    def is_null(self) -> "IsNull":
        return IsNull(self)

    def is_not_null(self) -> "Not":
        return Not(IsNull(self))

    def like(self, pattern: str) -> "Like":
        """SQL LIKE, case-sensitive: % any run, _ one character, backslash escapes them."""
        if not isinstance(pattern, str):
            raise QueryError(f"like() takes a string pattern, got {pattern!r}")
        return Like(self, pattern)

    def column_type(self, schema: Schema) -> Any:
        """This column's type in `schema`; QueryError naming the table's columns if unknown."""
        if self.name == ROWID:
            return ROWID_TYPE
        if self.name.startswith(RESERVED_PREFIX):
            raise QueryError(f"column {self.name!r}{_at(self.position)}: names starting with "
                             f"'_' are reserved; the only one a filter may use is {ROWID!r}",
                             position=self.position)
        if self.name not in schema.columns:
            raise QueryError(f"unknown column {self.name!r}{_at(self.position)} in filter; the "
                             f"table's columns are: {', '.join(schema.names())}",
                             position=self.position)
        return schema.columns[self.name]

    def _check(self, schema: Schema) -> None:
        self.column_type(schema)

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        if batch.schema.get_field_index(self.name) < 0:
            raise QueryError(f"filter column {self.name!r} is not in the data being filtered "
                             f"(columns: {', '.join(batch.schema.names)})", position=self.position)
        return batch.column(self.name)

    def to_sql(self) -> str:
        return quote_name(self.name)

    def to_json(self) -> dict:
        return {"column": self.name}


@dataclass(frozen=True, eq=False, repr=False)
class Literal(Operand):
    """A constant: bool, int (64-bit), finite float or str."""
    value: LiteralValue

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", coerce_literal(self.value))

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Scalar:
        return pa.scalar(self.value)

    def to_sql(self) -> str:
        return _sql_literal(self.value)

    def to_json(self) -> dict:
        return {"literal": self.value}


def col(name: str) -> Column:
    """Reference a column by name: col("price") < 200."""
    if not isinstance(name, str) or not name:
        raise QueryError(f"col() takes a non-empty column name, got {name!r}")
    return Column(name)


def lit(value: Any) -> Literal:
    """A literal value, for the rare comparison with a literal on the left: lit(3) < col("a")."""
    return Literal(value)


def match(column: str, query: str) -> "Match":
    """Full-text predicate: rows whose Text `column` matches `query` in its full-text index."""
    if not isinstance(query, str):
        raise QueryError(f"match() takes the query as a string, got {query!r}")
    return Match(col(column), query)


def _operand(value: Any) -> Operand:
    return value if isinstance(value, Operand) else Literal(value)


def as_predicate(e: Expr) -> Expr:
    """A bare column used as a condition means `column = TRUE`; a literal alone is no condition."""
    if isinstance(e, Column):
        return Compare("=", e, Literal(True))
    if isinstance(e, Literal):
        raise QueryError(f"the literal {e.to_sql()} alone is not a condition; compare a column "
                         f"with it")
    return e


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fits(column: Column, schema: Schema, values: Iterable[LiteralValue], what: str) -> str:
    """Check literals against a column's type; return the column's filter-level kind."""
    ctype = column.column_type(schema)
    kind = _column_kind(ctype)
    if kind == "vector":
        raise QueryError(f"column {column.name!r}{_at(column.position)} is a "
                         f"{type(ctype).__name__} column; filters cannot compare vectors "
                         f"(only IS NULL / IS NOT NULL apply)", position=column.position)
    for v in values:
        if _kind(v) != kind:
            raise QueryError(f"column {column.name!r}{_at(column.position)} is "
                             f"{type(ctype).__name__} but {what} {_sql_literal(v)}, a {_kind(v)}; "
                             f"use a {kind} literal", position=column.position)
    return kind


@dataclass(frozen=True, eq=False, repr=False)
class Compare(Expr):
    """left op right, op one of = != < <= > >=; at least one side is a column."""
    op: str
    left: Operand
    right: Operand

    def __post_init__(self) -> None:
        if self.op not in COMPARE_KERNELS:
            raise QueryError(f"unknown comparison operator {self.op!r}; use one of "
                             f"{', '.join(COMPARE_KERNELS)}")
        if not (isinstance(self.left, Column) or isinstance(self.right, Column)):
            raise QueryError(f"comparison {self.to_sql()} has no column; a filter compares a "
                             f"column with a value or another column")

    @classmethod
    def build(cls, op: str, left: Any, right: Any) -> "Compare":
        return cls(op, _operand(left), _operand(right))

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)

    def _check(self, schema: Schema) -> None:
        left, right = self.left, self.right
        if isinstance(left, Column) and isinstance(right, Column):
            lkind = _check_fits(left, schema, (), "")
            rkind = _check_fits(right, schema, (), "")
            if lkind != rkind:
                raise QueryError(f"cannot compare column {left.name!r} ({lkind}) with column "
                                 f"{right.name!r} ({rkind}){_at(left.position)}",
                                 position=left.position)
            return
        column, value = (left, right) if isinstance(left, Column) else (right, left)
        _check_fits(column, schema, (value.value,), f"is compared with")

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        return compare(self.op, self.left._eval(batch, context), self.right._eval(batch, context))

    def to_sql(self) -> str:
        return f"{self.left.to_sql()} {self.op} {self.right.to_sql()}"

    def to_json(self) -> dict:
        return {"op": self.op, "left": self.left.to_json(), "right": self.right.to_json()}

    def bounds_for(self, column: str) -> Bounds | None:
        op, left, right = self.op, self.left, self.right
        if isinstance(right, Column) and isinstance(left, Literal):
            op, left, right = FLIPPED[op], right, left
        if not (isinstance(left, Column) and left.name == column and isinstance(right, Literal)
                and _numeric(right.value)):
            return None
        v = right.value
        return {"=": (v, v, True, True), "<": (None, v, False, False), "<=": (None, v, False, True),
                ">": (v, None, False, False), ">=": (v, None, True, False)}.get(op)


@dataclass(frozen=True, eq=False, repr=False)
class InList(Expr):
    """column IN (values...); the values are literals of one type, possibly none."""
    column: Column
    values: tuple[LiteralValue, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(coerce_literal(v) for v in self.values))
        kinds = {_kind(v) for v in self.values}
        if len(kinds) > 1:
            raise QueryError(f"IN list for column {self.column.name!r}{_at(self.column.position)}"
                             f" mixes {' and '.join(sorted(kinds))} values; use one type",
                             position=self.column.position)

    def children(self) -> tuple[Expr, ...]:
        return (self.column,)

    def _check(self, schema: Schema) -> None:
        _check_fits(self.column, schema, self.values, "its IN list holds")

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        arr = self.column._eval(batch, context)
        if not self.values:
            # IN () is definitely false (not unknown), so NOT IN () selects every row.
            return pa.array(np.zeros(len(arr), dtype=bool))
        if _arrow_kind(arr.type) != _kind(self.values[0]):
            # A cast would quietly make 1 match '1' or TRUE; SQL refuses to compare them.
            raise QueryError(f"{self.to_sql()}: column {self.column.name!r} holds {arr.type} "
                             f"values, which cannot equal {_kind(self.values[0])} literals",
                             position=self.column.position)
        values: list[Any] = list(self.values)
        if pa.types.is_integer(arr.type):
            # Only whole numbers can equal an integer; matching in the column's own type keeps
            # large ids exact where a cast to float64 would round them.
            values = [int(v) for v in values if _numeric(v) and float(v).is_integer()
                      and INT64_MIN <= v <= INT64_MAX]
        elif pa.types.is_floating(arr.type):
            # is_in hashes bits, so -0.0 would miss 0.0, which SQL calls equal; adding +0.0
            # turns every -0.0 (in the column and the list) into 0.0. An integer no float64
            # holds exactly (past 2^53) can equal no stored value, so it is dropped.
            values = [float(v) + 0.0 for v in values if _numeric(v) and float(v) == v]
            arr = pc.add(arr, pa.scalar(0.0, arr.type))
        if values:
            found = pc.is_in(arr, value_set=pa.array(values).cast(arr.type))
        else:                                    # e.g. int column IN (2.5): no value can match
            found = pa.array(np.zeros(len(arr), dtype=bool))
        # SQL: NULL IN (...) is unknown, where Arrow's is_in says false.
        return pc.if_else(pc.is_valid(arr), found, pa.scalar(None, pa.bool_()))

    def to_sql(self, negated: bool = False) -> str:
        word = "NOT IN" if negated else "IN"
        return f"{self.column.to_sql()} {word} ({', '.join(map(_sql_literal, self.values))})"

    def to_json(self) -> dict:
        return {"op": "in", "column": self.column.name, "values": list(self.values)}


@dataclass(frozen=True, eq=False, repr=False)
class Between(Expr):
    """low <= column <= high (both ends included, as in SQL)."""
    column: Column
    low: LiteralValue
    high: LiteralValue

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", coerce_literal(self.low))
        object.__setattr__(self, "high", coerce_literal(self.high))

    def children(self) -> tuple[Expr, ...]:
        return (self.column,)

    def _check(self, schema: Schema) -> None:
        _check_fits(self.column, schema, (self.low, self.high), "BETWEEN bound is")

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        arr = self.column._eval(batch, context)
        return pc.and_kleene(compare(">=", arr, pa.scalar(self.low)),
                             compare("<=", arr, pa.scalar(self.high)))

    def to_sql(self, negated: bool = False) -> str:
        word = "NOT BETWEEN" if negated else "BETWEEN"
        return (f"{self.column.to_sql()} {word} {_sql_literal(self.low)} AND "
                f"{_sql_literal(self.high)}")

    def to_json(self) -> dict:
        return {"op": "between", "column": self.column.name, "low": self.low, "high": self.high}

    def bounds_for(self, column: str) -> Bounds | None:
        if self.column.name == column and _numeric(self.low) and _numeric(self.high):
            return (self.low, self.high, True, True)
        return None


@dataclass(frozen=True, eq=False, repr=False)
class IsNull(Expr):
    """column IS NULL (never unknown); IS NOT NULL is Not(IsNull)."""
    column: Column

    def children(self) -> tuple[Expr, ...]:
        return (self.column,)

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        return pc.is_null(self.column._eval(batch, context))

    def to_sql(self, negated: bool = False) -> str:
        return f"{self.column.to_sql()} IS {'NOT ' if negated else ''}NULL"

    def to_json(self) -> dict:
        return {"op": "is_null", "column": self.column.name}


@dataclass(frozen=True, eq=False, repr=False)
class Like(Expr):
    """column LIKE pattern: case-sensitive, % any run, _ one character, backslash escapes."""
    column: Column
    pattern: str

    def children(self) -> tuple[Expr, ...]:
        return (self.column,)

    def _check(self, schema: Schema) -> None:
        ctype = self.column.column_type(schema)
        if _column_kind(ctype) != "string":
            raise QueryError(f"LIKE {_sql_literal(self.pattern)} needs a String or Text column, "
                             f"but {self.column.name!r}{_at(self.column.position)} is "
                             f"{type(ctype).__name__}", position=self.column.position)

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        return pc.match_like(self.column._eval(batch, context), self.pattern)

    def to_sql(self, negated: bool = False) -> str:
        word = "NOT LIKE" if negated else "LIKE"
        return f"{self.column.to_sql()} {word} {_sql_literal(self.pattern)}"

    def to_json(self) -> dict:
        return {"op": "like", "column": self.column.name, "pattern": self.pattern}


@dataclass(frozen=True, eq=False, repr=False)
class Match(Expr):
    """MATCH(column, 'query'): rows the column's full-text index matches; needs a context."""
    column: Column
    query: str

    def children(self) -> tuple[Expr, ...]:
        return (self.column,)

    def _check(self, schema: Schema) -> None:
        ctype = self.column.column_type(schema)
        if not isinstance(ctype, Text):
            raise QueryError(f"MATCH needs a Text column, but {self.column.name!r}"
                             f"{_at(self.column.position)} is {type(ctype).__name__}; declare "
                             f"it unidb.Text() to index it for full text",
                             position=self.column.position)

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        if context is None or not hasattr(context, "match_mask"):
            raise QueryError(f"{self.to_sql()} needs a full-text index on column "
                             f"{self.column.name!r}; run it through a table that has one",
                             position=self.column.position)
        if batch.schema.get_field_index(ROWID) < 0:
            raise QueryError(f"{self.to_sql()} needs the {ROWID} column in the data it filters")
        row_ids = batch.column(ROWID).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        mask = np.asarray(context.match_mask(self.column.name, self.query, row_ids), dtype=bool)
        if mask.shape != (batch.num_rows,):
            raise QueryError(f"{self.to_sql()}: the full-text index answered {mask.shape} for "
                             f"{batch.num_rows} rows")
        return pa.array(mask)

    def to_sql(self) -> str:
        return f"MATCH({self.column.to_sql()}, {_sql_literal(self.query)})"

    def to_json(self) -> dict:
        return {"op": "match", "column": self.column.name, "query": self.query}


# Nodes whose negation SQL spells inside the predicate (`a NOT IN (...)`, `a IS NOT NULL`);
# their to_sql takes `negated`, and the text reads back as Not(node).
_NEGATABLE = (InList, Between, Like, IsNull)


@dataclass(frozen=True, eq=False, repr=False)
class Not(Expr):
    """NOT operand: true <-> false, unknown stays unknown."""
    operand: Expr

    def __post_init__(self) -> None:
        if not isinstance(self.operand, Expr):
            raise QueryError(f"NOT takes a filter, got {self.operand!r}")
        _set_depth(self, (self.operand,))

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        return pc.invert(self.operand._eval(batch, context))

    def to_sql(self) -> str:
        if isinstance(self.operand, _NEGATABLE):
            return self.operand.to_sql(negated=True)
        return f"NOT ({self.operand.to_sql()})"

    def to_json(self) -> dict:
        return {"op": "not", "arg": self.operand.to_json()}


@dataclass(frozen=True, eq=False, repr=False)
class _Junction(Expr):
    """AND / OR of two or more terms, kept flat: a & b & c is one node with three terms."""
    terms: tuple[Expr, ...]
    word = ""

    def __post_init__(self) -> None:
        _set_depth(self, self.terms)

    def children(self) -> tuple[Expr, ...]:
        return self.terms

    def to_sql(self) -> str:
        parts = [f"({t.to_sql()})" if isinstance(t, _Junction) else t.to_sql() for t in self.terms]
        return f" {self.word} ".join(parts)

    def to_json(self) -> dict:
        return {"op": self.word.lower(), "args": [t.to_json() for t in self.terms]}


class And(_Junction):
    """All terms true; false if any is false; otherwise unknown (Kleene)."""
    word = "AND"

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        result = self.terms[0]._eval(batch, context)
        for t in self.terms[1:]:
            result = pc.and_kleene(result, t._eval(batch, context))
        return result

    def bounds_for(self, column: str) -> Bounds | None:
        found = [b for b in (t.bounds_for(column) for t in self.terms) if b is not None]
        if not found:
            return None
        lo, hi, lo_inc, hi_inc = found[0]
        for b_lo, b_hi, b_lo_inc, b_hi_inc in found[1:]:
            # Each term must hold, so the range is the intersection: the larger low end and
            # the smaller high end; on a tie an end is included only if every term includes it.
            if b_lo is not None and (lo is None or b_lo > lo):
                lo, lo_inc = b_lo, b_lo_inc
            elif b_lo is not None and b_lo == lo:
                lo_inc = lo_inc and b_lo_inc
            if b_hi is not None and (hi is None or b_hi < hi):
                hi, hi_inc = b_hi, b_hi_inc
            elif b_hi is not None and b_hi == hi:
                hi_inc = hi_inc and b_hi_inc
        return (lo, hi, lo_inc, hi_inc)


class Or(_Junction):
    """Any term true; false if all are false; otherwise unknown (Kleene)."""
    word = "OR"

    def _eval(self, batch: pa.RecordBatch, context: Any) -> pa.Array:
        result = self.terms[0]._eval(batch, context)
        for t in self.terms[1:]:
            result = pc.or_kleene(result, t._eval(batch, context))
        return result


def _junction(cls: type[_Junction], terms: Iterable[Expr]) -> Expr:
    flat: list[Expr] = []
    for t in map(as_predicate, terms):
        flat.extend(t.terms if isinstance(t, cls) else (t,))
    return flat[0] if len(flat) == 1 else cls(tuple(flat))


def and_(*terms: Expr) -> Expr:
    """AND of the terms, flattened so that a & (b & c) and (a & b) & c are the same tree."""
    return _junction(And, terms)


def or_(*terms: Expr) -> Expr:
    """OR of the terms, flattened like and_."""
    return _junction(Or, terms)


def _from_json(d: Any, depth: int = 0) -> Expr:
    def bad(why: str) -> QueryError:
        return QueryError(f"malformed filter JSON {_short_repr(d)}: {why}")

    if not isinstance(d, dict):
        raise bad("expected an object")
    if depth > MAX_DEPTH:        # checked before recursing: the tree check comes too late
        raise QueryError(f"filter JSON nests deeper than {MAX_DEPTH} levels of NOT / AND / OR")
    try:
        if "column" in d and "op" not in d:
            return col(d["column"])
        if "literal" in d:
            return Literal(d["literal"])
        op = d.get("op")
        if op in COMPARE_KERNELS:
            return Compare(op, _from_json_operand(d["left"], depth),
                           _from_json_operand(d["right"], depth))
        if op in ("and", "or"):
            if not isinstance(d["args"], list):
                raise bad(f"{op} args must be a list")
            args = [_from_json(a, depth + 1) for a in d["args"]]
            if len(args) < 2:
                raise bad(f"{op} needs at least two args")
            return (and_ if op == "and" else or_)(*args)
        if op == "not":
            return Not(as_predicate(_from_json(d["arg"], depth + 1)))
        column = col(d["column"])
        if op == "in":
            return column.isin(d["values"])
        if op == "between":
            return column.between(d["low"], d["high"])
        if op == "is_null":
            return column.is_null()
        if op == "like":
            return column.like(d["pattern"])
        if op == "match":
            return match(d["column"], d["query"])
    except KeyError as e:
        raise bad(f"missing key {e}") from None
    raise bad(f"unknown op {d.get('op')!r}")


def _from_json_operand(d: Any, depth: int) -> Operand:
    if not isinstance(d, dict) or not ("column" in d and "op" not in d or "literal" in d):
        raise QueryError(f"malformed filter JSON {_short_repr(d)}: a comparison side must be "
                         f"a column or a literal")
    return _from_json(d, depth)


# Quotes malformed JSON in messages without recursing through a hostile, deeply nested value.
_JSON_QUOTE = reprlib.Repr()
_JSON_QUOTE.maxlevel, _JSON_QUOTE.maxdict, _JSON_QUOTE.maxlist = 3, 6, 6
_JSON_QUOTE.maxstring, _JSON_QUOTE.maxother = 80, 80


def _short_repr(d: Any) -> str:
    return _JSON_QUOTE.repr(d)


__all__ = ["Expr", "Column", "Literal", "Compare", "InList", "Between", "IsNull", "Like",
           "Match", "Not", "And", "Or", "col", "lit", "match", "and_", "or_",
           "as_predicate", "quote_name", "MatchContext", "ROWID", "MAX_DEPTH"]
