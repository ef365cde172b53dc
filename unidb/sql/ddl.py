"""DDL and DML: CREATE/DROP TABLE, CREATE/DROP INDEX, INSERT, UPDATE, DELETE — each one call of
the Table / Database API, so SQL writes take the same durable, all-or-nothing path.

CREATE TABLE has its own small parser (sqlglot's tokens, our grammar) because unidb's column
types — VECTOR(n) with a metric, SPARSEVECTOR, TEXT as a full-text column — are not SQL's:

    CREATE TABLE [IF NOT EXISTS] name (
        column type [PRIMARY KEY] [NOT NULL | NULL] , ...  [, PRIMARY KEY (column)] )
    type := BIGINT | INT | INTEGER | DOUBLE | FLOAT | REAL | BOOLEAN | VARCHAR | STRING | TEXT
          | VECTOR(dim [, metric]) [USING metric] | SPARSEVECTOR      metric := l2 | cosine | ip

Columns are nullable unless NOT NULL or PRIMARY KEY, as in SQL.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from unidb.errors import QueryError, SchemaError
from unidb.schema import METRICS, Bool, Float64, Int64, SparseVector, String, Text, Vector
from unidb.sql.filters import Converter, NotConvertible
from unidb.sql.parser import UnidbDialect, error_at

_INT = {"BIGINT", "INT", "INTEGER", "INT8", "INT64", "INT4", "INT2", "SMALLINT", "TINYINT",
        "LONG", "SERIAL", "BIGSERIAL"}
_FLOAT = {"DOUBLE", "FLOAT", "FLOAT8", "FLOAT4", "REAL", "NUMERIC", "DECIMAL"}
_BOOL = {"BOOLEAN", "BOOL"}
_STRING = {"VARCHAR", "STRING", "CHAR", "CHARACTER", "NVARCHAR", "UUID"}
_TEXT = {"TEXT"}
_VECTOR = {"VECTOR"}
_SPARSE = {"SPARSEVECTOR", "SPARSEVEC", "SPARSE_VECTOR", "SPARSE"}
_CREATE_TABLE = re.compile(r"\s*CREATE\s+TABLE\b", re.IGNORECASE)


def is_create_table(text: str) -> bool:
    return bool(_CREATE_TABLE.match(text)) and not re.match(
        r"\s*CREATE\s+TABLE\b[^(]*\bAS\b", text, re.IGNORECASE)


def _count(n: int, what: str = "count") -> pa.Table:
    return pa.table({what: pa.array([int(n)], type=pa.int64())})


def _status(msg: str) -> pa.Table:
    return pa.table({"status": [msg]})


# ----------------------------------------------------------------------------- CREATE TABLE


class _TokenReader:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[Token] = UnidbDialect().tokenize(text)
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def word(self) -> str | None:
        tok = self.peek()
        return None if tok is None else " ".join(self.text[tok.start:tok.end + 1].upper().split())

    def primary_key(self) -> bool:
        """Consume PRIMARY KEY (one token or two); False when not there."""
        if self.take("PRIMARY KEY"):
            return True
        if self.take("PRIMARY"):
            if not self.take("KEY"):
                raise self.error("KEY after PRIMARY")
            return True
        return False

    def error(self, expected: str) -> QueryError:
        tok = self.peek()
        if tok is None:
            return error_at(f"CREATE TABLE: unexpected end, expected {expected}", self.text,
                            position=len(self.text.rstrip()))
        got = self.text[tok.start:tok.end + 1]
        return error_at(f"CREATE TABLE: unexpected {got!r}, expected {expected}", self.text,
                        position=tok.start)

    def take(self, *words: str) -> bool:
        if self.word() in words:
            self.i += 1
            return True
        return False

    def expect(self, ttype: TokenType, expected: str) -> Token:
        tok = self.peek()
        if tok is None or tok.token_type != ttype:
            raise self.error(expected)
        self.i += 1
        return tok

    def name(self, what: str) -> str:
        tok = self.peek()
        if tok is None or tok.token_type in (TokenType.L_PAREN, TokenType.R_PAREN,
                                             TokenType.COMMA, TokenType.STRING,
                                             TokenType.NUMBER):
            raise self.error(what)
        self.i += 1
        return tok.text


def parse_create_table(text: str) -> tuple[str, dict, bool]:
    """(table name, {column: unidb type}, if_not_exists) from CREATE TABLE text."""
    r = _TokenReader(text)
    r.take("CREATE")
    r.take("TABLE")
    exists_ok = False
    if r.take("IF"):
        if not (r.take("NOT") and r.take("EXISTS")):
            raise r.error("IF NOT EXISTS")
        exists_ok = True
    name = r.name("a table name")
    r.expect(TokenType.L_PAREN, "'(' to open the column list")
    specs: dict[str, dict] = {}
    pk_clause = None
    while True:
        if r.primary_key():
            r.expect(TokenType.L_PAREN, "'(' after PRIMARY KEY")
            pk_tok = r.peek()
            pk_clause = (r.name("the primary key column"), pk_tok)
            r.expect(TokenType.R_PAREN, "')' (a single-column primary key)")
        else:
            col_tok = r.peek()
            col = r.name("a column name")
            if col in specs:
                raise error_at(f"CREATE TABLE: column {col!r} is defined twice", text,
                               position=col_tok.start)
            specs[col] = _column_spec(r, col)
            specs[col]["tok"] = col_tok
        tok = r.peek()
        if tok is not None and tok.token_type == TokenType.COMMA:
            r.i += 1
            continue
        r.expect(TokenType.R_PAREN, "',' or ')' after a column definition")
        break
    if r.peek() is not None and r.peek().token_type != TokenType.SEMICOLON:
        raise r.error("the end of the statement")
    if pk_clause is not None:
        col, tok = pk_clause
        if col not in specs:
            raise error_at(f"PRIMARY KEY ({col}) names no column of the table", text,
                           position=tok.start)
        specs[col]["primary_key"] = True
    columns = {}
    for col, s in specs.items():
        try:
            columns[col] = _make_type(s)
        except SchemaError as e:
            raise error_at(f"column {col!r}: {e}", text, position=s["tok"].start) from None
    return name, columns, exists_ok


def _column_spec(r: _TokenReader, col: str) -> dict:
    type_tok = r.peek()
    if type_tok is None:
        raise r.error(f"a type for column {col!r}")
    tname = r.word()
    r.i += 1
    if tname == "DOUBLE":
        r.take("PRECISION")
    if tname == "CHARACTER":
        r.take("VARYING")
    args: list[str] = []
    tok = r.peek()
    if tok is not None and tok.token_type == TokenType.L_PAREN:
        r.i += 1
        while True:
            t = r.peek()
            if t is None or t.token_type in (TokenType.R_PAREN,):
                break
            if t.token_type != TokenType.COMMA:
                args.append(t.text)
            r.i += 1
        r.expect(TokenType.R_PAREN, "')' after the type's arguments")
    spec = {"type": tname, "args": args, "nullable": True, "primary_key": False,
            "metric": None, "type_tok": type_tok, "text": r.text}
    while True:
        w = r.word()
        if r.primary_key():
            spec["primary_key"] = True
        elif w == "NOT NULL":
            r.i += 1
            spec["nullable"] = False
        elif w == "NOT":
            r.i += 1
            if not r.take("NULL"):
                raise r.error("NULL after NOT")
            spec["nullable"] = False
        elif w == "NULL":
            r.i += 1
        elif w in ("USING", "METRIC"):
            r.i += 1
            spec["metric"] = r.name("a metric (l2, cosine or ip)").lower()
        else:
            return spec


def _make_type(s: dict):
    t, args, text, tok = s["type"], s["args"], s["text"], s["type_tok"]
    common = {"nullable": s["nullable"] and not s["primary_key"],
              "primary_key": s["primary_key"]}
    if s["metric"] is not None and t not in _VECTOR:
        raise error_at(f"USING {s['metric']} applies to VECTOR columns only", text,
                       position=tok.start)
    if t in _INT:
        return Int64(**common)
    if t in _FLOAT:
        return Float64(**common)
    if t in _BOOL:
        return Bool(**common)
    if t in _STRING:
        return String(**common)
    if t in _TEXT:
        return Text(**common)
    if t in _SPARSE:
        return SparseVector(**common)
    if t in _VECTOR:
        if not args or not args[0].isdigit():
            raise error_at("VECTOR needs its dimension: VECTOR(256) or VECTOR(256, cosine)",
                           text, position=tok.start)
        metric = s["metric"] or (args[1].strip("'\"").lower() if len(args) > 1 else "l2")
        if metric not in METRICS:
            raise error_at(f"unknown vector metric {metric!r}; use one of {METRICS}", text,
                           position=tok.start)
        return Vector(int(args[0]), metric=metric, **common)
    raise error_at(f"unknown column type {t!r}; unidb SQL types: BIGINT, DOUBLE, BOOLEAN, "
                   f"VARCHAR, TEXT, VECTOR(n [, metric]), SPARSEVECTOR", text,
                   position=tok.start)


def create_table(ctx, text: str) -> pa.Table:
    name, columns, exists_ok = parse_create_table(text)
    if exists_ok and name in ctx.db.table_names():
        return _status(f"table {name} exists")
    ctx.db.create_table(name, columns)
    return _status(f"created table {name}")


# ----------------------------------------------------------------------------- statements


def run_statement(ctx, tree: exp.Expression) -> pa.Table:
    """Run a DDL / DML statement tree."""
    if isinstance(tree, exp.Insert):
        return insert(ctx, tree)
    if isinstance(tree, exp.Delete):
        return delete(ctx, tree)
    if isinstance(tree, exp.Update):
        return update(ctx, tree)
    if isinstance(tree, exp.Create) and str(tree.args.get("kind")).upper() == "INDEX":
        return create_index(ctx, tree)
    if isinstance(tree, exp.Create) and str(tree.args.get("kind")).upper() == "TABLE":
        raise error_at("CREATE TABLE ... AS SELECT is not supported: CREATE TABLE with its "
                       "column types, then INSERT INTO ... SELECT", ctx.text, position=0)
    if isinstance(tree, exp.Drop):
        return drop(ctx, tree)
    what = type(tree).__name__.upper()
    raise error_at(f"unsupported statement {what}: unidb SQL runs SELECT, EXPLAIN, CREATE "
                   f"TABLE/INDEX, DROP TABLE/INDEX, INSERT, UPDATE and DELETE", ctx.text,
                   position=len(ctx.text) - len(ctx.text.lstrip()))


def _table(ctx, node: exp.Expression):
    t = node.find(exp.Table) if not isinstance(node, exp.Table) else node
    table = ctx.table(t.name) if t is not None else None
    if table is None:
        raise error_at(f"unknown table {t.name if t is not None else '?'!r}; tables: "
                       f"{ctx.db.table_names()}", ctx.text, t)
    return table


def create_index(ctx, tree: exp.Create) -> pa.Table:
    index = tree.this
    table = _table(ctx, index.args["table"])
    params = index.args.get("params")
    cols = [o.this if isinstance(o, exp.Ordered) else o
            for o in (params.args.get("columns") if params else None) or []]
    if len(cols) != 1 or not isinstance(cols[0], exp.Column):
        raise error_at("CREATE INDEX takes one column: CREATE INDEX ON t USING partition (col)",
                       ctx.text, index)
    using = params.args.get("using")
    kind = using.name.lower() if using is not None else None
    options: dict[str, Any] = {}
    for prop in params.args.get("with_storage") or []:
        key = prop.name if hasattr(prop, "name") else str(prop.this)
        try:
            options[str(key).lower()] = ctx.constant(prop.args["value"])
        except NotConvertible:
            raise error_at(f"index option {key} must be a constant", ctx.text, prop) from None
    table.create_index(cols[0].name, kind=kind, **options)
    return _status(f"created index on {table.name}({cols[0].name})"
                   + (f" using {kind}" if kind else ""))


def drop(ctx, tree: exp.Drop) -> pa.Table:
    kind = str(tree.args.get("kind")).upper()
    exists = bool(tree.args.get("exists"))
    targets = tree.args.get("tables") or [tree.this]
    if kind == "TABLE":
        for t in targets:
            ctx.db.drop_table(t.name, missing_ok=exists)
        return _status("dropped table " + ", ".join(t.name for t in targets))
    if kind == "INDEX":
        t = targets[0]
        if not t.args.get("db"):
            raise error_at("DROP INDEX names table.column (unidb indexes are per column)",
                           ctx.text, t)
        table = ctx.table(t.args["db"].name)
        if table is None:
            raise error_at(f"unknown table {t.args['db'].name!r}", ctx.text, t)
        table.drop_index(t.name)
        return _status(f"dropped index on {table.name}({t.name})")
    raise error_at(f"DROP {kind} is not supported (DROP TABLE, DROP INDEX table.column)",
                   ctx.text, tree)


def _target_columns(ctx, tree: exp.Insert, table) -> list[str]:
    target = tree.this
    if isinstance(target, exp.Schema):
        cols = [c.name for c in target.expressions]
        bad = [c for c in cols if c not in table.schema]
        if bad:
            raise error_at(f"unknown column(s) {bad} in INSERT; table {table.name!r} has "
                           f"{table.schema.names()}", ctx.text, target)
        return cols
    return table.schema.names()


def _cell(ctx, node: exp.Expression, ctype) -> Any:
    try:
        v = ctx.constant(node)
    except NotConvertible:
        from unidb.sql.planner import finalize
        row = ctx.session.run("SELECT " + finalize(ctx, node.copy()).sql(dialect="duckdb"))
        v = row.column(0)[0].as_py()
    if isinstance(ctype, Vector) and isinstance(v, str):
        from unidb.sql.functions import parse_vector_text
        v = parse_vector_text(v)
    if isinstance(v, np.ndarray):
        v = v.tolist() if not isinstance(ctype, Vector) else v
    return v


def insert(ctx, tree: exp.Insert) -> pa.Table:
    table = _table(ctx, tree.this)
    cols = _target_columns(ctx, tree, table)
    conflict = tree.args.get("conflict")
    action = str(conflict.args.get("action") or "").upper() if conflict is not None else ""
    skip_existing = "NOTHING" in action or str(tree.args.get("alternative") or "").upper() \
        == "IGNORE"
    upsert = str(tree.args.get("alternative") or "").upper() == "REPLACE" or \
        (conflict is not None and not skip_existing)
    source = tree.args.get("expression")
    if isinstance(source, exp.Values):
        data: dict[str, list] = {c: [] for c in cols}
        for row in source.expressions:
            cells = row.expressions if isinstance(row, exp.Tuple) else [row]
            if len(cells) != len(cols):
                raise error_at(f"INSERT row has {len(cells)} values for {len(cols)} columns "
                               f"{cols}", ctx.text, row)
            for c, cell in zip(cols, cells):
                data[c].append(_cell(ctx, cell, table.schema[c]))
        rows: Any = data
    elif isinstance(source, exp.Query):
        from unidb.sql.planner import run_select
        result = run_select(ctx, source)
        if result.num_columns != len(cols):
            raise error_at(f"INSERT ... SELECT returns {result.num_columns} columns for "
                           f"{len(cols)} target columns {cols}", ctx.text, source)
        rows = pa.table(list(result.columns), names=cols)
    else:
        raise error_at("INSERT needs VALUES (...) or a SELECT", ctx.text, tree)
    if skip_existing:                     # ON CONFLICT DO NOTHING / INSERT OR IGNORE
        rows = _without_existing(table, rows)
    n = table.upsert(rows) if upsert else table.add(rows)
    if isinstance(n, dict):
        n = n.get("inserted", 0) + n.get("updated", 0)
    return _count(n)


def _without_existing(table, rows: Any) -> Any:
    """The rows (a dict of column lists, or an Arrow table) whose key the table lacks."""
    pk = table.primary_key
    keys = rows.column(pk).to_pylist() if isinstance(rows, pa.Table) else list(rows[pk])
    have = set(table.get(keys, columns=[pk]).column(0).to_pylist())
    keep = [k not in have for k in keys]
    if isinstance(rows, pa.Table):
        return rows.filter(pa.array(keep))
    return {c: [v for v, k in zip(vals, keep) if k] for c, vals in rows.items()}


def _where_filter(ctx, table, where: exp.Expression | None):
    """The WHERE as a unidb filter, or None when it needs DuckDB (see _matching_keys)."""
    if where is None:
        return None
    alias = table.name
    convert = Converter(lambda c: (not c.table or c.table == alias) and c.name in table.schema,
                        ctx.constant)
    try:
        expr = convert.convert(where.this)
        expr.validate(table.schema)
        return expr
    except (NotConvertible, QueryError):
        return None


def _matching_keys(ctx, table, where: exp.Expression | None) -> list:
    """Primary keys of the rows a WHERE selects, evaluated by the query engine (any SQL)."""
    from unidb.sql.planner import run_query
    pk = exp.column(table.primary_key, quoted=True)
    q = exp.select(pk).from_(exp.Table(this=exp.to_identifier(table.name, quoted=True)))
    if where is not None:
        q = q.where(where.this.copy())
    return run_query(ctx, q).column(0).to_pylist()


def delete(ctx, tree: exp.Delete) -> pa.Table:
    table = _table(ctx, tree.this)
    where = tree.args.get("where")
    expr = _where_filter(ctx, table, where)
    if expr is not None:
        return _count(table.delete(where=expr))
    keys = _matching_keys(ctx, table, where)
    return _count(table.delete(ids=keys) if keys else 0)


def update(ctx, tree: exp.Update) -> pa.Table:
    table = _table(ctx, tree.this)
    values: dict[str, Any] = {}
    computed: dict[str, exp.Expression] = {}
    for a in tree.expressions:
        if not isinstance(a, exp.EQ) or not isinstance(a.this, exp.Column):
            raise error_at("UPDATE ... SET column = value, ...", ctx.text, a)
        col = a.this.name
        if col not in table.schema:
            raise error_at(f"unknown column {col!r} in UPDATE; table {table.name!r} has "
                           f"{table.schema.names()}", ctx.text, a.this)
        try:
            v = ctx.constant(a.expression)
            if isinstance(table.schema[col], Vector) and isinstance(v, str):
                from unidb.sql.functions import parse_vector_text
                v = parse_vector_text(v)
            values[col] = v
        except NotConvertible:
            computed[col] = a.expression
    where = tree.args.get("where")
    expr = _where_filter(ctx, table, where)
    if not computed and (where is None or expr is not None):
        return _count(table.update(where=expr, values=values))
    # Computed values (SET price = price * 2) or a WHERE outside the filter language: DuckDB
    # produces the new rows, and one upsert replaces the old ones (an update is delete+insert).
    from unidb.sql.planner import run_query
    sets = dict(computed)
    for c, v in values.items():
        sets[c] = exp.Placeholder(this=str(_push_param(ctx, v)))
    projections = [sets[c].copy().as_(c, quoted=True) if c in sets
                   else exp.column(c, quoted=True) for c in table.schema.names()]
    q = exp.select(*projections).from_(exp.Table(this=exp.to_identifier(table.name, quoted=True)))
    if where is not None:
        q = q.where(where.this.copy())
    rows = run_query(ctx, q)
    if not rows.num_rows:
        return _count(0)
    table.upsert(rows)
    return _count(rows.num_rows)


def _push_param(ctx, value: Any) -> int:
    ctx.params = list(ctx.params) + [value]
    return len(ctx.params)


__all__ = ["run_statement", "create_table", "parse_create_table", "is_create_table"]
