"""The filter language: trees (unidb/query/filter_tree.py) and their text spelling
(unidb/query/filter_parse.py), under the names the API and the users import.

`parse_filter("price < 200 AND category IN ('a', 'b')")` and
`(col("price") < 200) & col("category").isin(["a", "b"])` build the same tree; `to_expr`
normalises any `where=` argument to one. The parser builds tree nodes, so it sits above
filter_tree; this module sits above both.
"""
from __future__ import annotations

from unidb.errors import QueryError
from unidb.query.filter_parse import parse
from unidb.query.filter_tree import (MAX_DEPTH, ROWID, And, Between, Column, Compare, Expr,
                                     InList, IsNull, Like, Literal, Match, MatchContext, Not, Or,
                                     and_, as_predicate, col, lit, match, or_)


def parse_filter(text: str) -> Expr:
    """Parse filter text (a SQL WHERE subset) into a tree; QueryError with .position if bad."""
    return parse(text)


def to_expr(f: str | Expr | None) -> Expr | None:
    """Normalise a `where=` argument: text is parsed, a tree is kept, None stays None."""
    if f is None:
        return None
    if isinstance(f, str):
        return parse_filter(f)
    if isinstance(f, Expr):
        return as_predicate(f)
    raise QueryError(f"a filter is a string like \"price < 10\" or an expression like "
                     f"col('price') < 10, got {type(f).__name__}: {f!r}")


__all__ = ["Expr", "Column", "Literal", "Compare", "InList", "Between", "IsNull", "Like",
           "Match", "Not", "And", "Or", "col", "lit", "match", "and_", "or_", "parse_filter",
           "to_expr", "as_predicate", "MatchContext", "ROWID", "MAX_DEPTH"]
