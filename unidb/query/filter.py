"""The filter language: trees (unidb/query/filter_tree.py) and their text spelling
(unidb/query/filter_parse.py), under the names the API and the users import; and the one place
a filter meets a table snapshot.

`parse_filter("price < 200 AND category IN ('a', 'b')")` and
`(col("price") < 200) & col("category").isin(["a", "b"])` build the same tree; `to_expr`
normalises any `where=` argument to one and `checked_filter` also checks it against a schema.
The parser builds tree nodes, so it sits above filter_tree; this module sits above both.

`part_masks` evaluates a tree on each part of a snapshot; `row_filter` turns that into the
query's `RowFilter` (unidb/index/rowfilter.py), which every access path then reads: a search
evaluates its filter once.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from unidb.errors import QueryError
from unidb.index.rowfilter import RowFilter
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


def checked_filter(where: Any, schema: Any) -> Expr | None:
    """A `where=` argument as a tree whose columns and literals fit `schema` (QueryError if not)."""
    expr = to_expr(where)
    if expr is not None:
        expr.validate(schema)
    return expr


def part_masks(state: Any, expr: Expr | None, context: MatchContext | None = None
               ) -> Iterator[tuple[Any, np.ndarray]]:
    """Each non-empty part of a table snapshot (a `TableState`) with the bool mask of its rows
    that are live and match `expr` (every live row when None). `context` answers MATCH()."""
    for part in state.parts:
        if not part.num_rows:
            continue
        mask = state.live_mask(part)
        if expr is not None:
            mask = mask & expr.evaluate(part.table, context=context)
        yield part, mask


def row_filter(state: Any, expr: Expr | None, context: MatchContext | None = None
               ) -> RowFilter:
    """The rows of a snapshot a query may return, `expr` evaluated once on every part."""
    mask = np.zeros(state.next_rowid, dtype=bool)
    count = 0
    for part, m in part_masks(state, expr, context):
        mask[part.row_ids[m]] = True
        count += int(np.count_nonzero(m))
    return RowFilter(mask, count)


__all__ = ["Expr", "Column", "Literal", "Compare", "InList", "Between", "IsNull", "Like",
           "Match", "Not", "And", "Or", "col", "lit", "match", "and_", "or_", "parse_filter",
           "to_expr", "as_predicate", "MatchContext", "ROWID", "MAX_DEPTH", "checked_filter",
           "part_masks", "row_filter"]
