"""Vector blocks: a SELECT over one unidb table that its native search answers.

    ORDER BY d(col, q) LIMIT k                 -> SearchRequest(vector=q, where=f, limit=k)
    WHERE d(col, q) < r                        -> SearchRequest(vector=q, distance_range=(,r))
    ORDER BY w1*d(a, q1) + w2*d(b, q2) LIMIT k -> SearchRequest(vectors=, weights=)  multi-vector
    ORDER BY bm25(col, 'q') DESC LIMIT k       -> SearchRequest(text='q')

`analyze` recognises a block (or raises NotNative: DuckDB then evaluates the SELECT exactly),
`run_block` runs its `SearchRequest` on the table (unidb/engine/execute.py; EXPLAIN reads the
run's own explain record), `rewrite_block` makes the SELECT read the
block's Arrow result (the distance becomes its `_distance` column) so DuckDB can finish the
query, and `fast_result` answers a top-level block whose SELECT list only names columns
without DuckDB at all (what keeps SQL within 1 ms of the Python API).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from sqlglot import exp

from unidb.errors import QueryError
from unidb.query.request import SearchRequest
from unidb.query.result import SearchResult
from unidb.schema import Text, Vector
from unidb.sql.context import Context
from unidb.sql.filters import Converter, NotConvertible, conjuncts
from unidb.sql.functions import distance_fn, text_fn
from unidb.sql.parser import error_at

DISTANCE_COLUMN = "_distance"
SCORE_COLUMN = "_score"
RANGE_OPS = {exp.LT: ("hi", True), exp.LTE: ("hi", False), exp.GT: ("lo", True),
             exp.GTE: ("lo", False)}
FLIP = {exp.LT: exp.GT, exp.LTE: exp.GTE, exp.GT: exp.LT, exp.GTE: exp.LTE}


class NotNative(Exception):
    """This SELECT is not a vector block; DuckDB evaluates it exactly."""


@dataclass
class Term:
    fn: Any
    column: str
    vector: np.ndarray
    weight: float = 1.0


@dataclass
class Block:
    """A SELECT over one unidb table that its native search can answer."""
    table: Any
    alias: str
    kind: str                                   # "topk" | "range" | "multi" | "text"
    terms: list[Term] = field(default_factory=list)
    text: tuple[str, str] | None = None         # (column, query) for kind "text"
    k: int | None = None
    offset: int = 0
    lo: float | None = None
    hi: float | None = None
    lo_strict: bool = False
    hi_strict: bool = False
    filter: Any = None
    value_sql: set = field(default_factory=set)   # node_key of nodes that become the value
    remaining: list[exp.Expression] = field(default_factory=list)   # WHERE terms left to DuckDB
    extra_order: bool = False


def owns_column(alias: str, schema) -> Any:
    def owns(c: exp.Column) -> bool:
        return (not c.table or c.table == alias) and c.name in schema
    return owns


def _distance_term(ctx: Context, node: exp.Expression, alias: str, schema
                   ) -> Term | None:
    """fn(column, constant vector) over this table (either argument order), else None."""
    while isinstance(node, exp.Paren):
        node = node.this
    fn = distance_fn(node)
    if fn is None or len(node.expressions) != 2:
        return None
    a, b = node.expressions
    owns = owns_column(alias, schema)
    for c, other in ((a, b), (b, a)):
        if isinstance(c, exp.Column) and owns(c) and isinstance(schema[c.name], Vector):
            v = ctx.vector(other)
            if v is None:
                return None
            ctype = schema[c.name]
            if len(v) != ctype.dim:
                raise error_at(f"{fn.name}({c.name}, ...): the query vector has {len(v)} "
                               f"dimensions, column {c.name!r} has {ctype.dim}", ctx.text, other)
            return Term(fn, c.name, v)
    return None


def _weighted_terms(ctx: Context, node: exp.Expression, alias: str, schema,
                    weight: float = 1.0) -> list[Term] | None:
    """A sum of constant-weighted distance terms, else None."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Add):
        left = _weighted_terms(ctx, node.this, alias, schema, weight)
        right = _weighted_terms(ctx, node.expression, alias, schema, weight)
        return None if left is None or right is None else left + right
    if isinstance(node, (exp.Mul, exp.Div)):
        for inner, coef in ((node.this, node.expression), (node.expression, node.this)):
            try:
                c = ctx.constant(coef)
            except NotConvertible:
                continue
            if not isinstance(c, (int, float)) or isinstance(c, bool):
                return None
            if isinstance(node, exp.Div):
                if inner is not node.this or c == 0:
                    return None
                c = 1.0 / c
            return _weighted_terms(ctx, inner, alias, schema, weight * c)
        return None
    term = _distance_term(ctx, node, alias, schema)
    if term is None:
        return None
    term.weight = weight
    return [term]


def resolve_alias(select: exp.Select, node: exp.Expression) -> exp.Expression:
    """ORDER BY's reference to an output column (by alias or by position) -> its expression."""
    if isinstance(node, exp.Literal) and not node.is_string and str(node.this).isdigit():
        i = int(node.this)
        if 1 <= i <= len(select.expressions):
            p = select.expressions[i - 1]
            return p.this if isinstance(p, exp.Alias) else p
    if isinstance(node, exp.Column) and not node.table:
        for p in select.expressions:
            if isinstance(p, exp.Alias) and p.alias == node.name:
                return p.this
    return node


def int_value(ctx: Context, node: exp.Expression | None, what: str) -> int | None:
    if node is None:
        return None
    expr = node.expression if isinstance(node, (exp.Limit, exp.Offset)) else node
    try:
        v = ctx.constant(expr)
    except NotConvertible:
        raise NotNative(f"{what} is not a constant") from None
    if isinstance(v, (np.integer,)):
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise error_at(f"{what} must be a non-negative integer, got {v!r}", ctx.text, expr)
    return v


NOT_BLOCK_ARGS = ("joins", "group", "having", "qualify", "distinct", "windows", "laterals",
                   "pivots", "sample", "match", "connect", "prewhere", "into", "kind")


def analyze(ctx: Context, select: exp.Expression) -> Block:
    """The vector block `select` is, or NotNative."""
    if not isinstance(select, exp.Select):
        raise NotNative("not a SELECT")
    if any(select.args.get(a) for a in NOT_BLOCK_ARGS):
        raise NotNative("joins, grouping or DISTINCT")
    src = select.args.get("from_") or select.args.get("from")
    if src is None or not isinstance(src.this, exp.Table) or src.this.args.get("db"):
        raise NotNative("FROM is not one table")
    table = ctx.table(src.this.name)
    if table is None:
        raise NotNative("FROM is not a unidb table")
    if any(isinstance(p, (exp.AggFunc, exp.Window)) for e in select.expressions
           for p in e.walk()):
        raise NotNative("aggregates or window functions in the SELECT list")
    alias = src.this.alias_or_name
    schema = table.schema
    block = Block(table, alias, "range")
    order = select.args.get("order")
    limit = int_value(ctx, select.args.get("limit"), "LIMIT")
    block.offset = int_value(ctx, select.args.get("offset"), "OFFSET") or 0
    if order is not None and order.expressions:
        first = order.expressions[0]
        block.extra_order = len(order.expressions) > 1
        key = resolve_alias(select, first.this)
        desc = bool(first.args.get("desc"))
        tf = text_fn(key)
        terms = None if tf else _weighted_terms(ctx, key, alias, schema)
        if tf == "bm25":
            c, q = _text_args(ctx, key, alias, schema)
            if not desc:
                raise NotNative("bm25 ascending")
            block.kind, block.text = "text", (c, q)
        elif terms is not None:
            if len(terms) == 1 and terms[0].weight != 1.0:
                raise NotNative("one scaled distance")     # rare: DuckDB ranks it exactly
            single = len(terms) == 1
            for t in terms:
                if t.fn.metric != schema[t.column].metric:
                    raise NotNative("distance function differs from the column's metric")
                if t.fn.negated != desc and single or (not single and (t.fn.negated or desc)):
                    raise NotNative("ordered away from the nearest rows")
            if not single:
                if len({t.column for t in terms}) != len(terms) or \
                        any(not (t.weight > 0 and np.isfinite(t.weight)) for t in terms):
                    raise NotNative("multi-vector needs distinct columns and positive weights")
                block.kind = "multi"
            else:
                block.kind = "topk"
            block.terms = terms
        if block.kind != "range":
            block.value_sql.add(node_key(unparen(key), ctx.shared))
            block.k = None if limit is None else limit + block.offset
            if block.k == 0:
                raise NotNative("LIMIT 0")
    # WHERE: distance bounds and scalar terms.
    convert = Converter(owns_column(alias, schema), ctx.constant)
    scalar = []
    for term in conjuncts(select.args.get("where").this if select.args.get("where") else None):
        bound = _range_bound(ctx, term, alias, schema)
        if bound is None:
            if any(distance_fn(n) or text_fn(n) == "bm25" for n in term.walk()):
                raise NotNative("a distance in a WHERE term that is not a bound")
            try:
                scalar.append(convert.convert(term))
            except NotConvertible:
                raise NotNative("WHERE term outside the filter language") from None
            continue
        t, side, strict, value, node = bound
        if block.kind in ("multi", "text"):
            raise NotNative("distance bound with multi-vector or text ranking")
        if block.terms and not _same_term(block.terms[0], t):
            raise NotNative("bound on a different distance than the ORDER BY")
        if t.fn.metric != schema[t.column].metric or t.fn.negated:
            raise NotNative("distance bound in another metric than the column's")
        block.terms = [t]
        block.value_sql.add(node_key(unparen(node), ctx.shared))
        if side == "hi":
            if block.hi is None or value < block.hi or (value == block.hi and strict):
                block.hi, block.hi_strict = value, strict
        else:
            if block.lo is None or value > block.lo or (value == block.lo and strict):
                block.lo, block.lo_strict = value, strict
        if strict:
            block.remaining.append(term)
    if block.kind == "range" and block.hi is None and block.lo is None:
        raise NotNative("no vector ranking or distance bound")
    if block.k is None and block.kind != "range":
        if block.kind != "topk" or (block.hi is None and block.lo is None):
            raise NotNative("ORDER BY distance without LIMIT or a distance bound")
    if block.kind == "topk" and (block.hi is not None or block.lo is not None):
        block.kind = "range"          # ORDER BY d LIMIT k with d < r: a range cut at k
    if scalar:
        from unidb.query.filter_tree import and_
        try:
            block.filter = and_(*scalar)
            block.filter.validate(schema)
        except QueryError as e:
            raise error_at(str(e), ctx.text, select.args.get("where")) from None
    return block


# Parsed trees are cached and reused, so a node's key is computed once: by id, with the node
# kept beside it so a recycled id can never return a stale key. Bounded: cleared when full.
_KEY_MEMO: dict[int, tuple[Any, Any]] = {}
KEY_MEMO_SIZE = 50_000


def node_key(node: Any, memo: bool = False) -> Any:
    """A structural key of a tree (equal for equal trees): what `.sql()` would compare, at a
    fraction of its cost (`.sql()` deep-copies the tree first; this runs on every query).
    memo=True only for the parse cache's trees, which are never edited."""
    if memo and isinstance(node, exp.Expression):
        hit = _KEY_MEMO.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        key = _node_key(node)
        if len(_KEY_MEMO) >= KEY_MEMO_SIZE:
            _KEY_MEMO.clear()
        _KEY_MEMO[id(node)] = (node, key)
        return key
    return _node_key(node)


def _node_key(node: Any) -> Any:
    if isinstance(node, exp.Expression):
        return (type(node).__name__,) + tuple(
            (k, node_key(v)) for k, v in node.args.items() if v is not None and v is not False
            and v != [])
    if isinstance(node, list):
        return tuple(node_key(x) for x in node)
    return node


def unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _same_term(a: Term, b: Term) -> bool:
    return a.fn.name == b.fn.name and a.column == b.column and len(a.vector) == len(b.vector) \
        and bool(np.array_equal(a.vector, b.vector))


def _text_args(ctx: Context, node: exp.Anonymous, alias: str, schema) -> tuple[str, str]:
    args = node.expressions
    name = str(node.this)
    if len(args) != 2 or not isinstance(args[0], exp.Column) or \
            not owns_column(alias, schema)(args[0]):
        raise error_at(f"{name}(text_column, 'query') needs a column of this table first",
                       ctx.text, node)
    try:
        q = ctx.constant(args[1])
    except NotConvertible:
        raise error_at(f"{name}'s query must be a string constant", ctx.text, args[1]) from None
    if not isinstance(q, str):
        raise error_at(f"{name}'s query must be a string, got {q!r}", ctx.text, args[1])
    if not isinstance(schema[args[0].name], Text):
        raise error_at(f"{name}({args[0].name}, ...) needs a Text column", ctx.text, args[0])
    return args[0].name, q


def _range_bound(ctx, term, alias, schema):
    """(Term, "hi"|"lo", strict, value, distance node) for `d(col, q) < r` and friends."""
    while isinstance(term, exp.Paren):
        term = term.this
    cls = type(term)
    if cls in RANGE_OPS:
        for dnode, other, c in ((term.this, term.expression, cls),
                                (term.expression, term.this, FLIP[cls])):
            t = _distance_term(ctx, dnode, alias, schema)
            if t is None:
                continue
            try:
                value = ctx.constant(other)
            except NotConvertible:
                return None
            if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                    not np.isfinite(value):
                raise error_at(f"distance bound {other.sql()} must be a finite number",
                               ctx.text, other)
            side, strict = RANGE_OPS[c]
            return t, side, strict, float(value), dnode
    if isinstance(term, exp.Between) and not term.args.get("symmetric"):
        t = _distance_term(ctx, term.this, alias, schema)
        if t is not None:
            return None                  # BETWEEN bounds both sides: DuckDB handles it exactly
    return None


# ----------------------------------------------------------------------------- running blocks


def _needed_columns(ctx: Context, select: exp.Select, block: Block) -> list[str]:
    schema = block.table.schema
    names: list[str] = []
    star = False
    parts = list(select.expressions) + list(block.remaining)
    if select.args.get("order"):
        parts.append(select.args["order"])
    for part in parts:
        for n in part.walk():
            if isinstance(n, exp.Star) and not isinstance(n.parent, exp.Count):
                star = True
            elif isinstance(n, exp.Column):
                if isinstance(n.this, exp.Star):
                    star = True
                elif n.table and n.table != block.alias:
                    raise error_at(f"unknown table {n.table!r} in column {n.sql()}",
                                   ctx.text, n)
                elif n.name in schema:
                    if n.name not in names:
                        names.append(n.name)
                elif n.name not in (DISTANCE_COLUMN, SCORE_COLUMN) and not n.table and \
                        not _is_output_alias(select, n.name):
                    raise error_at(f"unknown column {n.name!r}; table {block.table.name!r} "
                                   f"has {schema.names()}", ctx.text, n)
    if star:
        return schema.names()
    return [c for c in schema.names() if c in names]


def _is_output_alias(select: exp.Select, name: str) -> bool:
    return any(isinstance(p, exp.Alias) and p.alias == name for p in select.expressions)


def block_request(block: Block, columns: list[str]) -> SearchRequest:
    """The SearchRequest a vector block asks of its table (columns: what the SELECT reads)."""
    common: dict[str, Any] = {"where": block.filter, "select": columns}
    if block.kind == "text":
        col, q = block.text
        return SearchRequest(text=q, column=col, limit=block.k, **common)
    if block.kind == "multi":
        return SearchRequest(vectors={t.column: t.vector for t in block.terms},
                             weights={t.column: t.weight for t in block.terms}, limit=block.k,
                             **common)
    term = block.terms[0]
    if block.kind == "range":
        # No limit: the k nearest inside the range are cut after sorting (fast path or
        # DuckDB), which holds whatever order the native range returns rows in.
        return SearchRequest(vector=term.vector, column=term.column,
                             distance_range=(block.lo, block.hi), **common)
    return SearchRequest(vector=term.vector, column=term.column, limit=block.k, **common)


def run_block(ctx: Context, block: Block, columns: list[str]) -> pa.Table:
    """Execute a vector block through the table's search; returns columns + the value column
    (`_distance`, or `_score` for text)."""
    t = block.table
    try:
        result = t.execute(block_request(block, columns))
    except (QueryError, ImportError) as e:
        # A build without text search answers with "not available" (or lacks the module).
        if block.kind == "text" and (isinstance(e, ImportError) or "not available" in str(e)
                                     or "index" in str(e)):
            raise QueryError(f"bm25({block.text[0]}, ...) on table {t.name!r} needs a "
                             f"full-text index on column {block.text[0]!r}, which is not "
                             f"available ({type(e).__name__}: {e})") from None
        raise
    if ctx.explain:                          # the run's own record: the search runs once
        ctx.step(f"vector {block.kind}", "unidb", _explain_block(block, result))
    out = result.to_arrow()
    if block.kind == "text":
        return out
    return _value_column(out, block)


def _value_column(result: pa.Table, block: Block) -> pa.Table:
    """The native value column as `_distance`, the value of the SQL function as written
    (inner product answers `_score`, the dot product)."""
    names = result.column_names
    if SCORE_COLUMN in names and DISTANCE_COLUMN not in names:
        i = names.index(SCORE_COLUMN)
        score = result.column(i)
        import pyarrow.compute as pc
        value = score if block.terms[0].fn.negated else pc.negate(score)
        return result.set_column(i, DISTANCE_COLUMN, value)
    return result


def _explain_block(block: Block, result: SearchResult) -> str:
    records = result.explain
    info = records[0] if len(records) == 1 else list(records)
    what = {"table": block.table.name, "kind": block.kind,
            "columns": [t.column for t in block.terms],
            "functions": [t.fn.name for t in block.terms], "k": block.k,
            "range": None if block.kind != "range" else [block.lo, block.hi],
            "filter": None if block.filter is None else block.filter.to_sql()}
    if block.kind == "multi":
        what["weights"] = [t.weight for t in block.terms]
    return repr({**what, "search": info})


def table_source(t, vector_columns: list[str]):
    """(take(row_ids, columns) -> Arrow rows, DataSource) for the executor's operators: the
    table's latest snapshot (`Table.data_source()`: internal row ids, the table's indexes)."""
    source = t.data_source()
    state = source.state
    return (lambda ids, cols: state.take(np.asarray(ids, dtype=np.int64), cols)), source


# ----------------------------------------------------------------------------- rewriting


def value_ref(alias: str, name: str = DISTANCE_COLUMN) -> exp.Column:
    return exp.column(name, table=alias, quoted=True)


def replace_values(node: exp.Expression, sqls: set[str], ref) -> exp.Expression:
    def fix(n: exp.Expression) -> exp.Expression:
        if isinstance(n, (exp.Anonymous, exp.Add, exp.Mul, exp.Div, exp.Paren)) and \
                node_key(n) in sqls:
            return ref()
        return n
    return node.transform(fix, copy=False)


def expand_star(select: exp.Select, alias: str, columns: list[str]) -> None:
    out = []
    for p in select.expressions:
        if isinstance(p, exp.Star) or (isinstance(p, exp.Column) and
                                       isinstance(p.this, exp.Star)):
            out.extend(exp.column(c, table=alias, quoted=True) for c in columns)
        else:
            out.append(p)
    select.set("expressions", out)


def rewrite_block(ctx: Context, select: exp.Select, block: Block) -> None:
    """Run the block natively and make `select` read its result (in place)."""
    columns = _needed_columns(ctx, select, block)
    result = run_block(ctx, block, columns)
    name = ctx.fresh("vq")
    ctx.session.register(name, result)
    value = SCORE_COLUMN if block.kind == "text" else DISTANCE_COLUMN
    ref = lambda: value_ref(block.alias, value)        # noqa: E731
    expand_star(select, block.alias, block.table.schema.names())
    src = select.args.get("from_") or select.args.get("from")
    src.set("this", exp.Table(this=exp.to_identifier(name),
                              alias=exp.TableAlias(this=exp.to_identifier(block.alias,
                                                                          quoted=True))))
    remaining = [replace_values(r.copy(), block.value_sql, ref) for r in block.remaining]
    select.set("where", exp.Where(this=exp.and_(*remaining)) if remaining else None)
    for key in ("expressions", "order"):
        v = select.args.get(key)
        if isinstance(v, list):
            select.set(key, [replace_values(e, block.value_sql, ref) for e in v])
        elif v is not None:
            select.set(key, replace_values(v, block.value_sql, ref))


# ----------------------------------------------------------------------------- fast path


def fast_result(ctx: Context, select: exp.Select, block: Block) -> pa.Table | None:
    """A top-level block whose SELECT list only names columns: answered without DuckDB."""
    if block.offset or block.extra_order:
        return None
    outputs: list[tuple[str, str]] = []          # (output name, source column)
    schema = block.table.schema
    value = SCORE_COLUMN if block.kind == "text" else DISTANCE_COLUMN
    for p in select.expressions:
        name = p.alias if isinstance(p, exp.Alias) else None
        e = p.this if isinstance(p, exp.Alias) else p
        if isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star)):
            outputs.extend((c, c) for c in schema.names())
        elif isinstance(e, exp.Column) and (not e.table or e.table == block.alias) and \
                (e.name in schema or e.name == value):
            outputs.append((name or e.name, e.name))
        elif node_key(unparen(e), ctx.shared) in block.value_sql:
            outputs.append((name or value, value))
        else:
            return None
    if select.args.get("order") is not None:
        key = resolve_alias(select, select.args["order"].expressions[0].this)
        if node_key(unparen(key), ctx.shared) not in block.value_sql:
            return None
    needed = [c for c in schema.names() if c in {s for _, s in outputs}]
    result = run_block(ctx, block, needed)
    if block.kind == "range":
        # Strict bounds (the native range is inclusive) and ORDER BY / LIMIT, in Arrow.
        import pyarrow.compute as pc
        d = result.column(DISTANCE_COLUMN)
        keep = None
        if block.hi_strict:
            keep = pc.less(d, block.hi)
        if block.lo_strict:
            low = pc.greater(d, block.lo)
            keep = low if keep is None else pc.and_(keep, low)
        if keep is not None:
            result = result.filter(keep)
        if select.args.get("order") is not None:
            result = result.take(pc.sort_indices(result.column(DISTANCE_COLUMN)))
        if block.k is not None:
            result = result.slice(0, block.k)
    cols = [result.column(src) for _, src in outputs]
    return pa.Table.from_arrays(cols, names=[n for n, _ in outputs])


__all__ = ["Block", "Term", "NotNative", "analyze", "block_request", "run_block", "rewrite_block",
           "fast_result", "table_source", "node_key", "DISTANCE_COLUMN", "SCORE_COLUMN"]
