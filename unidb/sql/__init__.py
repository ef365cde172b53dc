"""SQL over a unidb database: `db.sql(query, params)` -> pyarrow.Table (docs/sql.md).

parse (parser.py: sqlglot + pgvector operators) -> plan (planner.py: vector blocks run through
the Table API, the relational rest in DuckDB over Arrow views) -> DDL/DML through the Table
API's durable write path (ddl.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from sqlglot import exp

from unidb.errors import QueryError


def _params(params: Any, needed: int) -> list:
    if params is None:
        params = []
    elif isinstance(params, np.ndarray) or isinstance(params, (str, bytes, dict)):
        params = [params]          # a lone vector (or value) is the single parameter $1
    elif isinstance(params, tuple):
        params = list(params)
    elif not isinstance(params, list):
        raise QueryError(f"params must be a list (or tuple) of values for $1..$n / ?, got "
                         f"{type(params).__name__}")
    return params


def _check_count(tree, text: str, params: list, needed: int) -> None:
    if len(params) >= needed:
        return
    from unidb.sql.parser import error_at
    first = min((p for p in tree.find_all(exp.Placeholder) if int(p.this) > len(params)),
                key=lambda p: int(p.this))
    raise error_at(f"parameter ${first.this} has no value: the statement uses {needed} "
                   f"parameter(s) but {len(params)} were given", text, first)


def run_sql(db, query: str, params: Any = None) -> pa.Table:
    """Run one SQL statement against `db`; returns its result (or a count) as Arrow."""
    from unidb.sql import ddl
    from unidb.sql.context import Context
    from unidb.sql.parser import parse
    from unidb.sql.planner import run_query, run_select
    if isinstance(query, str) and ddl.is_create_table(query):
        ctx = Context(db, query, _params(params, 0), run_query=run_query)
        return ddl.create_table(ctx, query)
    tree, explain, nparams = parse(query)
    ctx = Context(db, query, _params(params, nparams), explain=explain, run_query=run_query)
    _check_count(tree, query, ctx.params, nparams)
    try:
        if isinstance(tree, exp.Query):
            if explain:
                run_select(ctx, tree)
                return _explain_table(ctx)
            return run_select(ctx, tree)
        if explain:
            raise QueryError("EXPLAIN takes a SELECT statement")
        return ddl.run_statement(ctx, tree)
    finally:
        ctx.close()


# Statements that may not hide inside a query a read-only caller runs (a CTE wrapping an
# INSERT, SELECT ... INTO).
_WRITES = (exp.DDL, exp.DML, exp.Command, exp.Into, exp.Set, exp.Pragma, exp.Attach,
           exp.Detach, exp.Use, exp.Transaction, exp.Install)


def is_read_only(query: str) -> bool:
    """Whether `query` is one statement that only reads: a query (SELECT, set operation) or
    EXPLAIN of one, with no statement inside. Decided on the tree `run_sql` would run; text
    that does not parse (or that the parser refuses, e.g. setseed()) is not read-only."""
    from unidb.sql import ddl
    from unidb.sql.parser import parse
    if not isinstance(query, str) or ddl.is_create_table(query):
        return False
    try:
        tree, _, _ = parse(query)
    except QueryError:
        return False
    return isinstance(tree, exp.Query) and tree.find(*_WRITES) is None


def _explain_table(ctx) -> pa.Table:
    rows = ctx.steps
    return pa.table({"step": [r["step"] for r in rows], "engine": [r["engine"] for r in rows],
                     "detail": [str(r["detail"]) for r in rows]})


__all__ = ["run_sql", "is_read_only"]
