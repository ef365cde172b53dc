"""Similarity joins in SQL: `JOIN u ON d(t.a, u.b) < r` and `t, LATERAL (SELECT .. FROM u
ORDER BY d(u.b, t.a) LIMIT k) x` run on the executor's similarity join (unidb.query.planner:
streamed, exact GEMM blocks or index scans per outer row — the cross product never exists);
its pairs are registered as an Arrow relation (__lk, __rk, _distance) and the join is
rewritten to go through them, so DuckDB finishes the query. Without the native operator the
join stays as written and DuckDB evaluates it exactly (streamed, in DuckDB)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from sqlglot import exp

from unidb.errors import QueryError
from unidb.schema import Vector
from unidb.sql.blocks import (DISTANCE_COLUMN, FLIP, NOT_BLOCK_ARGS, RANGE_OPS, NotNative,
                              expand_star, int_value, node_key, owns_column, replace_values,
                              resolve_alias, table_source, unparen, value_ref)
from unidb.sql.context import Context
from unidb.sql.filters import Converter, NotConvertible, conjuncts
from unidb.sql.functions import distance_fn

def _alias_tables(ctx: Context, select: exp.Select) -> dict[str, Any]:
    out = {}
    sources = [select.args.get("from_") or select.args.get("from")] + \
        [j for j in select.args.get("joins") or []]
    for s in sources:
        if s is not None and isinstance(s.this, exp.Table):
            t = ctx.table(s.this.name)
            if t is not None:
                out[s.this.alias_or_name] = t
    return out


def _join_distance(ctx, term, tables: dict, right_alias: str):
    """(fn, left alias, left col, right col, side, strict, value, node) for a join bound."""
    while isinstance(term, exp.Paren):
        term = term.this
    cls = type(term)
    if cls not in RANGE_OPS:
        return None
    for dnode, other, c in ((term.this, term.expression, cls),
                            (term.expression, term.this, FLIP[cls])):
        fn = distance_fn(dnode)
        if fn is None or len(dnode.expressions) != 2 or fn.negated:
            continue
        a, b = dnode.expressions
        if not all(isinstance(x, exp.Column) and x.table in tables for x in (a, b)):
            continue
        if b.table != right_alias:
            a, b = b, a
        if b.table != right_alias or a.table == right_alias:
            continue
        side, strict = RANGE_OPS[c]
        if side != "hi":
            return None
        try:
            value = ctx.constant(other)
        except NotConvertible:
            return None
        lt, rt = tables[a.table], tables[b.table]
        for x, t in ((a, lt), (b, rt)):
            if x.name not in t.schema or not isinstance(t.schema[x.name], Vector) or \
                    t.schema[x.name].metric != fn.metric:
                return None
        return fn, a.table, a.name, b.name, strict, float(value), dnode
    return None


def rewrite_joins(ctx: Context, select: exp.Select) -> None:
    """Replace `JOIN u ON d(t.a, u.b) < r` by a join through the similarity-join pairs."""
    joins = select.args.get("joins") or []
    if not joins:
        return
    try:
        from unidb.query.planner import similarity_join
    except ImportError:                       # no native operator: DuckDB evaluates it exactly
        return
    tables = _alias_tables(ctx, select)
    new_joins = []
    for j in joins:
        if isinstance(j.this, exp.Lateral) and not j.args.get("side"):
            _rewrite_lateral(ctx, select, j, tables, similarity_join)
            new_joins.append(j)
            continue
        on = j.args.get("on")
        if not isinstance(j.this, exp.Table) or on is None or j.args.get("side") or \
                (j.args.get("kind") or "").upper() not in ("", "INNER") or \
                j.this.alias_or_name not in tables:
            new_joins.append(j)
            continue
        right_alias = j.this.alias_or_name
        terms = conjuncts(on)
        found = None
        for i, term in enumerate(terms):
            found = _join_distance(ctx, term, tables, right_alias)
            if found is not None:
                rest = terms[:i] + terms[i + 1:] + ([term] if found[4] else [])
                break
        if found is None:
            new_joins.append(j)
            continue
        fn, left_alias, lcol, rcol, strict, radius, dnode = found
        lt, rt = tables[left_alias], tables[right_alias]
        pairs = _similarity_pairs(similarity_join, lt, lcol, rt, rcol,
                                  _side_filter(ctx, select, left_alias, lt),
                                  _side_filter(ctx, select, right_alias, rt),
                                  radius=radius, strict=strict)
        pname = ctx.fresh("pairs")
        palias = ctx.fresh("p")
        ctx.session.register(pname, pairs)
        lpk, rpk = lt.primary_key, rt.primary_key
        join_pairs = exp.Join(
            this=exp.Table(this=exp.to_identifier(pname),
                           alias=exp.TableAlias(this=exp.to_identifier(palias))),
            on=exp.EQ(this=exp.column("__lk", table=palias),
                      expression=exp.column(lpk, table=left_alias, quoted=True)))
        cond = exp.EQ(this=exp.column(rpk, table=right_alias, quoted=True),
                      expression=exp.column("__rk", table=palias))
        j.set("on", exp.and_(cond, *rest))
        new_joins.extend([join_pairs, j])
        sqls = {node_key(dnode), node_key(exp.Anonymous(
            this=dnode.this, expressions=[e.copy() for e in dnode.expressions[::-1]]))}
        ref = lambda: value_ref(palias)          # noqa: E731
        for key in ("expressions", "where", "order", "joins"):
            v = select.args.get(key)
            if isinstance(v, list):
                for e in v:
                    replace_values(e, sqls, ref)
            elif v is not None:
                replace_values(v, sqls, ref)
        if ctx.explain:
            ctx.step("similarity join", "unidb", repr({
                "left": f"{lt.name}.{lcol}", "right": f"{rt.name}.{rcol}", "function": fn.name,
                "max_distance": radius, "pairs": pairs.num_rows,
                "operator": "unidb.query.planner.similarity_join (streamed, exact blocks "
                            "or index scans)"}))
    select.set("joins", new_joins)


def _side_filter(ctx: Context, select: exp.Select, alias: str, table) -> Any:
    """The WHERE terms of `select` over one join side only, as a unidb filter (or None)."""
    terms = []
    where = select.args.get("where")
    for term in conjuncts(where.this if where is not None else None):
        cols = list(term.find_all(exp.Column))
        if cols and all(c.table == alias for c in cols):
            try:
                e = Converter(owns_column(alias, table.schema), ctx.constant).convert(term)
                e.validate(table.schema)
                terms.append(e)
            except (NotConvertible, QueryError):
                pass          # DuckDB still applies it after the join: pushdown is optional
    if not terms:
        return None
    from unidb.query.filter_tree import and_
    return and_(*terms)


def _similarity_pairs(similarity_join, lt, lcol, rt, rcol, left_filter, right_filter,
                      radius: float | None = None, strict: bool = False,
                      k: int | None = None) -> pa.Table:
    """(__lk, __rk, _distance): left/right primary keys of every pair the join yields."""
    ltake, lsrc = table_source(lt, [lcol])
    rtake, rsrc = table_source(rt, [rcol])
    li, ri, d = [], [], []
    for a, b, dist in similarity_join(lsrc, rsrc, (lcol, rcol), max_distance=radius, k=k,
                                      expr_left=left_filter, expr_right=right_filter):
        li.append(np.asarray(a, dtype=np.int64))
        ri.append(np.asarray(b, dtype=np.int64))
        d.append(np.asarray(dist, dtype=np.float64))
    li = np.concatenate(li) if li else np.zeros(0, np.int64)
    ri = np.concatenate(ri) if ri else np.zeros(0, np.int64)
    d = np.concatenate(d) if d else np.zeros(0, np.float64)
    if strict:
        keep = d < radius
        li, ri, d = li[keep], ri[keep], d[keep]
    lk = ltake(li, [lt.primary_key]).column(0)
    rk = rtake(ri, [rt.primary_key]).column(0)
    return pa.table({"__lk": lk, "__rk": rk, DISTANCE_COLUMN: pa.array(d)})


def _rewrite_lateral(ctx: Context, select: exp.Select, j: exp.Join, tables: dict,
                     similarity_join) -> bool:
    """`t, LATERAL (SELECT .. FROM u ORDER BY d(u.b, t.a) LIMIT k) x` -> per-row top-k from
    the similarity join (k nearest per outer row); the subquery then reads the pairs."""
    lat = j.this
    inner = lat.this.this if isinstance(lat.this, exp.Subquery) else lat.this
    if not isinstance(inner, exp.Select) or any(inner.args.get(a) for a in NOT_BLOCK_ARGS):
        return False
    src = inner.args.get("from_") or inner.args.get("from")
    order = inner.args.get("order")
    if src is None or not isinstance(src.this, exp.Table) or order is None:
        return False
    rt = ctx.table(src.this.name)
    ralias = src.this.alias_or_name
    if rt is None or ralias in tables:
        return False
    key = unparen(resolve_alias(inner, order.expressions[0].this))
    fn = distance_fn(key)
    if fn is None or fn.negated or order.expressions[0].args.get("desc") or \
            len(key.expressions) != 2:
        return False
    a, b = key.expressions
    if not (isinstance(a, exp.Column) and isinstance(b, exp.Column)):
        return False
    if a.table in tables and (b.table in ("", ralias)):
        outer, own = a, b
    elif b.table in tables and (a.table in ("", ralias)):
        outer, own = b, a
    else:
        return False
    lt = tables[outer.table]
    for c, t in ((outer, lt), (own, rt)):
        if c.name not in t.schema or not isinstance(t.schema[c.name], Vector) or \
                t.schema[c.name].metric != fn.metric:
            return False
    # The subquery may use outer columns only inside the distance.
    for c in inner.find_all(exp.Column):
        if c.table and c.table != ralias and c is not outer:
            return False
    try:
        k = int_value(ctx, inner.args.get("limit"), "LIMIT")
        offset = int_value(ctx, inner.args.get("offset"), "OFFSET") or 0
    except NotNative:
        return False
    if not k:
        return False
    right_filter = None
    where = inner.args.get("where")
    if where is not None:
        try:
            convert = Converter(owns_column(ralias, rt.schema), ctx.constant)
            right_filter = convert.convert(where.this)
            right_filter.validate(rt.schema)
        except (NotConvertible, QueryError):
            return False
    pairs = _similarity_pairs(similarity_join, lt, outer.name, rt, own.name,
                              _side_filter(ctx, select, outer.table, lt), right_filter,
                              k=k + offset)
    pname, palias = ctx.fresh("pairs"), ctx.fresh("p")
    ctx.session.register(pname, pairs)
    sqls = {node_key(key), node_key(exp.Anonymous(
        this=key.this, expressions=[e.copy() for e in key.expressions[::-1]]))}
    ref = lambda: value_ref(palias)          # noqa: E731
    for arg in ("expressions", "order"):
        v = inner.args.get(arg)
        if isinstance(v, list):
            inner.set(arg, [replace_values(e, sqls, ref) for e in v])
        elif v is not None:
            inner.set(arg, replace_values(v, sqls, ref))
    expand_star(inner, ralias, rt.schema.names())
    src.set("this", exp.Table(this=exp.to_identifier(pname),
                              alias=exp.TableAlias(this=exp.to_identifier(palias))))
    inner.set("joins", [exp.Join(
        this=exp.Table(this=exp.to_identifier(rt.name, quoted=True),
                       alias=exp.TableAlias(this=exp.to_identifier(ralias, quoted=True))),
        on=exp.EQ(this=exp.column(rt.primary_key, table=ralias, quoted=True),
                  expression=exp.column("__rk", table=palias)))])
    inner.set("where", exp.Where(this=exp.EQ(
        this=exp.column("__lk", table=palias),
        expression=exp.column(lt.primary_key, table=outer.table, quoted=True))))
    if ctx.explain:
        ctx.step("similarity join (lateral top-k)", "unidb", repr({
            "outer": f"{lt.name}.{outer.name}", "inner": f"{rt.name}.{own.name}",
            "function": fn.name, "k": k + offset, "pairs": pairs.num_rows,
            "filter": None if right_filter is None else right_filter.to_sql()}))
    return True


__all__ = ["rewrite_joins"]
