"""SQL WHERE conditions -> unidb filter trees (unidb/query/filter_tree.py), so scalar predicates run
inside the vector search (filtered top-k, range) instead of after it.

Only what the filter language can say converts: comparisons of a column with a constant,
[NOT] IN, [NOT] BETWEEN, IS [NOT] NULL, [NOT] LIKE, MATCH(col, 'q'), bare Bool columns, AND,
OR, NOT. Anything else (arithmetic, other functions, subqueries, ILIKE, a column of another
table) raises `NotConvertible`; the planner then evaluates that query exactly in DuckDB.
"""
from __future__ import annotations

from typing import Callable

from sqlglot import exp

from unidb.errors import QueryError
from unidb.query import filter_tree as F
from unidb.query.compare import FLIPPED


class NotConvertible(Exception):
    """This SQL condition has no equivalent in the filter language (names the node).

    Raised on the hot path (every parameter is tried as a constant), so the message is only
    rendered when someone asks for it."""

    def __str__(self) -> str:
        arg = self.args[0] if self.args else ""
        return f"{arg.sql()} is not a constant" if isinstance(arg, exp.Expression) else str(arg)


_COMPARE = {exp.EQ: "=", exp.NEQ: "!=", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}


def conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    """The AND-ed terms of a condition (parentheses around an AND are looked through)."""
    if node is None:
        return []
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return conjuncts(node.this) + conjuncts(node.expression)
    return [node]


class Converter:
    """Converts conditions over one table; `owns(column node)` says whether a column is ours,
    `constant(node)` evaluates a literal / parameter (raising NotConvertible otherwise)."""

    def __init__(self, owns: Callable[[exp.Column], bool], constant: Callable):
        self.owns = owns
        self.constant = constant

    def convert(self, node: exp.Expression) -> F.Expr:
        try:
            return F.as_predicate(self._expr(node))
        except QueryError as e:
            raise NotConvertible(str(e)) from None

    def _column(self, node: exp.Expression) -> F.Column | None:
        if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star) \
                and self.owns(node):
            return F.Column(node.name)
        return None

    def _value(self, node: exp.Expression):
        v = self.constant(node)
        if v is None or isinstance(v, (list, tuple, dict)) or hasattr(v, "shape") and \
                getattr(v, "ndim", 0) > 0:
            raise NotConvertible(f"{node.sql()} is not a scalar constant")
        return v

    def _expr(self, node: exp.Expression) -> F.Expr:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.And):
            return F.and_(self._expr(node.this), self._expr(node.expression))
        if isinstance(node, exp.Or):
            return F.or_(self._expr(node.this), self._expr(node.expression))
        if isinstance(node, exp.Not):
            return F.Not(F.as_predicate(self._expr(node.this)))
        op = _COMPARE.get(type(node))
        if op is not None:
            left, right = self._column(node.this), self._column(node.expression)
            if left is not None and right is None:
                return F.Compare(op, left, F.Literal(self._value(node.expression)))
            if right is not None and left is None:
                return F.Compare(FLIPPED[op], right, F.Literal(self._value(node.this)))
            raise NotConvertible(f"{node.sql()} does not compare a column with a constant")
        if isinstance(node, exp.In):
            c = self._column(node.this)
            if c is None or node.args.get("query") is not None or node.args.get("unnest"):
                raise NotConvertible(f"{node.sql()}")
            return c.isin([self._value(v) for v in node.expressions])
        if isinstance(node, exp.Between):
            c = self._column(node.this)
            if c is None:
                raise NotConvertible(node.sql())
            return c.between(self._value(node.args["low"]), self._value(node.args["high"]))
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            c = self._column(node.this)
            if c is None:
                raise NotConvertible(node.sql())
            return c.is_null()
        if isinstance(node, exp.Like) and not node.args.get("escape"):
            c = self._column(node.this)
            pattern = self._value(node.expression)
            if c is None or not isinstance(pattern, str):
                raise NotConvertible(node.sql())
            like = c.like(pattern)
            return F.Not(like) if node.args.get("negate") else like
        if isinstance(node, exp.Anonymous) and str(node.this).lower() == "match":
            args = node.expressions
            c = self._column(args[0]) if len(args) == 2 else None
            q = self._value(args[1]) if c is not None else None
            if c is None or not isinstance(q, str):
                raise NotConvertible(node.sql())
            return F.Match(c, q)
        if isinstance(node, exp.Boolean):
            raise NotConvertible(node.sql())
        c = self._column(node)
        if c is not None:
            return c
        raise NotConvertible(f"{node.sql()} is not a filter the vector search can apply")


__all__ = ["Converter", "NotConvertible", "conjuncts"]
