"""What runs in unidb and what runs in DuckDB.

A SELECT over one unidb table whose ORDER BY is a distance (or a weighted sum of distances, or
bm25) with a LIMIT, or whose WHERE bounds a distance, is a *vector block*. Its scalar WHERE
terms become a unidb filter and the block runs natively as one `SearchRequest` on the table:

    ORDER BY d(col, q) LIMIT k                -> vector=q, where=f, limit=k      (filtered top-k)
    WHERE d(col, q) < r                       -> vector=q, distance_range=(None, r), where=f
    ORDER BY w1*d(a, q1) + w2*d(b, q2) LIMIT k -> vectors=, weights=              (multi-vector)
    ORDER BY bm25(col, 'q') DESC LIMIT k      -> text='q'
    JOIN u ON d(t.a, u.b) < r                 -> similarity join (unidb.query.planner)

A block's result is registered in DuckDB as an Arrow relation that replaces the block's FROM
(the distance becomes its `_distance` column), and the rest of the statement — GROUP BY, joins
on keys, window functions, subqueries, CTEs — runs in DuckDB over Arrow views of the tables.
A top-level block whose SELECT list only names columns skips DuckDB altogether (this is what
keeps SQL within 1 ms of the Python API). Whatever the native path cannot express (a filter
outside the filter language, a distance that does not match the column's metric, ORDER BY
distance DESC) is evaluated exactly in DuckDB with its array distance functions.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from sqlglot import exp

from unidb.errors import QueryError
from unidb.sql.blocks import (DISTANCE_COLUMN, NotNative, analyze, fast_result, owns_column,
                              rewrite_block, unparen)
from unidb.sql.context import Context
from unidb.sql.filters import Converter, NotConvertible, conjuncts
from unidb.sql.functions import distance_fn, duckdb_distance, text_fn, vector_literal
from unidb.sql.joins import rewrite_joins
from unidb.sql.parser import error_at

def finalize(ctx: Context, tree: exp.Expression) -> exp.Expression:
    """Translate what is left for DuckDB: distances to array functions, parameters to literals."""
    def fix(n: exp.Expression) -> exp.Expression:
        fn = distance_fn(n)
        if fn is not None:
            if len(n.expressions) != 2:
                raise error_at(f"{fn.name} takes two vectors", ctx.text, n)
            args = []
            for a in n.expressions:
                v = None if isinstance(a, exp.Column) else ctx.vector(a)
                args.append(a if v is None else vector_literal(v))
            return duckdb_distance(fn, *args)
        tf = text_fn(n)
        if tf is not None:
            col = n.expressions[0].sql() if n.expressions else "?"
            raise error_at(f"{tf.upper()}({col}, ...) can only rank or filter a single unidb "
                           f"table's search (ORDER BY bm25(col, 'q') DESC LIMIT k, or WHERE "
                           f"MATCH(col, 'q') in a vector query); it needs that table's "
                           f"full-text index", ctx.text, n)
        if isinstance(n, exp.Placeholder):
            return _literal(ctx, n, ctx.param(n))
        return n
    return tree.transform(fix, copy=False)


def _literal(ctx: Context, node, value: Any) -> exp.Expression:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not np.isfinite(value):
            raise error_at(f"parameter value {value!r} is not finite", ctx.text, node)
        return exp.Literal.number(repr(value))
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind in "fiu" and arr.ndim == 1:
            return vector_literal(arr) if arr.dtype.kind == "f" else \
                exp.Array(expressions=[exp.Literal.number(str(int(x))) for x in arr])
        return exp.Array(expressions=[_literal(ctx, node, v) for v in value])
    raise error_at(f"parameter of type {type(value).__name__} cannot be used here", ctx.text,
                   node)


def _register_tables(ctx: Context, tree: exp.Expression) -> None:
    """Register every unidb table the tree reads, as an Arrow view of the columns it names
    (registering costs per column, and an unnamed vector column is never read anyway)."""
    done = set(ctx.session.names)
    named = {c.name for c in tree.find_all(exp.Column) if not isinstance(c.this, exp.Star)}
    star = any(True for _ in tree.find_all(exp.Star))
    for t in tree.find_all(exp.Table):
        name = t.name
        if not name or name in done or t.args.get("db"):
            continue
        table = ctx.table(name)
        if table is not None:
            cols = None if star else [c for c in table.schema.names() if c in named] or \
                [table.primary_key]
            ctx.session.register(name, table.to_arrow(columns=cols))
            done.add(name)


def _collect_ctes(ctx: Context, tree: exp.Expression) -> None:
    for cte in tree.find_all(exp.CTE):
        ctx.cte_names.add(cte.alias_or_name)


def run_query(ctx: Context, tree: exp.Expression) -> pa.Table:
    """Run a query tree (owned by the caller: it is edited in place)."""
    _collect_ctes(ctx, tree)
    selects = [s for s in tree.find_all(exp.Select)]
    # Innermost first: an outer block's analysis must see its subqueries already rewritten.
    selects.sort(key=lambda s: -_depth(s))
    for s in selects:
        try:
            block = analyze(ctx, s)
        except NotNative:
            rewrite_joins(ctx, s)
            _rewrite_text_scan(ctx, s)
            continue
        rewrite_block(ctx, s, block)
    _name_distances(tree)
    tree = finalize(ctx, tree)
    _register_tables(ctx, tree)
    sql = tree.sql(dialect="duckdb")
    if ctx.explain:
        ctx.step("relational", "duckdb", sql + "\n" + ctx.session.plan_text(sql))
        return pa.table({})
    return ctx.session.run(sql)


def _name_distances(tree: exp.Expression) -> None:
    """An unaliased distance in a SELECT list is named `_distance`, as the native path names
    it (DuckDB would name it after its own spelling of the expression)."""
    for s in tree.find_all(exp.Select):
        out = []
        for p in s.expressions:
            if distance_fn(unparen(p)) is not None:
                p = exp.alias_(p, DISTANCE_COLUMN, quoted=True)
            out.append(p)
        s.set("expressions", out)


def _rewrite_text_scan(ctx: Context, select: exp.Select) -> None:
    """A single-table SELECT filtered by MATCH(col, 'q'): the filter runs in unidb."""
    where = select.args.get("where")
    if where is None or not any(text_fn(n) == "match" for n in where.walk()):
        return
    src = select.args.get("from_") or select.args.get("from")
    if src is None or not isinstance(src.this, exp.Table) or select.args.get("joins"):
        return
    table = ctx.table(src.this.name)
    if table is None:
        return
    alias = src.this.alias_or_name
    convert = Converter(owns_column(alias, table.schema), ctx.constant)
    keep, native = [], []
    for term in conjuncts(where.this):
        try:
            native.append(convert.convert(term))
        except NotConvertible:
            keep.append(term)
    if not any(isinstance(n, exp.Anonymous) and text_fn(n) == "match" for t in keep
               for n in t.walk()) and native:
        from unidb.query.filter_tree import and_
        expr = and_(*native)
        try:
            data = table.to_arrow(where=expr)
        except QueryError as e:
            raise error_at(f"{e}", ctx.text, where) from None
        name = ctx.fresh("scan")
        ctx.session.register(name, data)
        src.set("this", exp.Table(this=exp.to_identifier(name),
                                  alias=exp.TableAlias(this=exp.to_identifier(alias,
                                                                              quoted=True))))
        select.set("where", exp.Where(this=exp.and_(*keep)) if keep else None)
        if ctx.explain:
            ctx.step("filtered scan", "unidb", f"{table.name} WHERE {expr.to_sql()}")


def _depth(node: exp.Expression) -> int:
    d = 0
    while node.parent is not None:
        node = node.parent
        d += 1
    return d


def run_select(ctx: Context, tree: exp.Expression) -> pa.Table:
    """Entry point for a query statement: the fast path first, then the general plan."""
    if isinstance(tree, exp.Select):
        ctx.shared = True
        try:
            block = analyze(ctx, tree)
        except NotNative:
            block = None
        if block is not None:
            out = fast_result(ctx, tree, block)
            if out is not None:
                if ctx.explain:
                    ctx.step("projection", "unidb", f"columns {out.column_names} picked from "
                             f"the search result in Python (DuckDB not needed)")
                return out
        ctx.shared = False
    return run_query(ctx, tree.copy())


__all__ = ["Context", "run_select", "run_query", "finalize"]
