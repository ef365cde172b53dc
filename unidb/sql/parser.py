"""SQL text -> sqlglot tree in unidb's dialect: DuckDB's grammar plus pgvector's operators.

`a <-> b` (L2), `a <=> b` (cosine distance) and `a <#> b` (negative inner product) are
tokenized by sqlglot's own tokenizer, so an operator inside a string literal, a quoted
identifier or a comment is never touched and every token keeps its source position. They
parse at the precedence of `*` (sqlglot's choice for `<->`), so `img <-> $1 < 0.5` and
`(img <-> $1) + 0.5 * (txt <-> $2)` read as written; right after parsing each one becomes the
function call it abbreviates: `l2_distance(a, b)`, `cosine_distance(a, b)`,
`negative_inner_product(a, b)`. Parameters are `$1..$n` or `?` (numbered left to right).
"""
from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from unidb.errors import QueryError
from unidb.sql.functions import OPERATOR_FUNCTIONS

# Parsed statements are cached by text: parsing costs ~0.2-1 ms, which alone would exceed the
# SQL layer's budget over the Python API (< 1 ms per top-k query, docs/sql.md).
PARSE_CACHE_SIZE = 512
# Longer SQL than this is refused before tokenizing (a generated IN list belongs in a join).
MAX_SQL_CHARS = 4 << 20
# Deepest statement tree accepted. sqlglot's parser spends ~20 Python frames per nested
# parenthesis (it fails near 40 levels); generating SQL and planning spend 1-3 frames per tree
# level, so trees past this bound (e.g. a chain of 300 unary minuses) are refused up front
# rather than failing with RecursionError somewhere later.
MAX_SQL_DEPTH = 150
# DuckDB functions that change the connection's state (its random seed, a sequence): the
# connection is shared by every statement a thread runs, so none may leave state behind.
STATEFUL_FUNCTIONS = frozenset({"setseed", "nextval"})


class _CosineOp(exp.Expression, exp.Binary):
    """`a <=> b` before it is rewritten to cosine_distance(a, b)."""


class _NegIpOp(exp.Expression, exp.Binary):
    """`a <#> b` before it is rewritten to negative_inner_product(a, b)."""


class UnidbDialect(DuckDB):
    """DuckDB's SQL with pgvector's distance operators; MATCH(col, 'q') is a plain function."""

    class Tokenizer(DuckDB.Tokenizer):
        # HASH_DASH ("#-") is a Postgres JSON operator DuckDB never tokenizes: free to reuse.
        KEYWORDS = {**DuckDB.Tokenizer.KEYWORDS, "<->": TokenType.LR_ARROW,
                    "<=>": TokenType.NULLSAFE_EQ, "<#>": TokenType.HASH_DASH}

    class Parser(DuckDB.Parser):
        FACTOR = {**DuckDB.Parser.FACTOR, TokenType.LR_ARROW: exp.Distance,
                  TokenType.NULLSAFE_EQ: _CosineOp, TokenType.HASH_DASH: _NegIpOp}
        FUNCTION_PARSERS = {k: v for k, v in DuckDB.Parser.FUNCTION_PARSERS.items()
                            if k != "MATCH"}
        PLACEHOLDER_PARSERS = {**DuckDB.Parser.PLACEHOLDER_PARSERS,
                               TokenType.PLACEHOLDER: lambda self: self._next_qmark()}

        def _parse_placeholder(self):
            # Keep where each parameter stands, so an error about it can point there.
            start = self._curr
            node = super()._parse_placeholder()
            if isinstance(node, exp.Placeholder) and start is not None:
                node.meta.update(start=start.start, end=start.end, line=start.line,
                                 col=start.col)
            return node

        def _next_qmark(self) -> exp.Placeholder:
            # `?` parameters are numbered in the order they appear (the parser reads left to
            # right); they are marked so that mixing them with `$n` can be refused.
            self._qmarks = getattr(self, "_qmarks", 0) + 1
            return exp.Placeholder(this=str(self._qmarks), qmark=True)


_OPERATOR_CLASSES = {exp.Distance: "<->", _CosineOp: "<=>", _NegIpOp: "<#>"}
_LINE_COL = re.compile(r"Line (\d+), Col: (\d+)")


def position_of(text: str, line: int, column: int) -> int:
    """0-based character offset of a 1-based (line, column) in text."""
    lines = text.split("\n")
    line = max(1, min(line, len(lines)))
    return sum(len(x) + 1 for x in lines[:line - 1]) + max(column - 1, 0)


def line_col(text: str, position: int) -> tuple[int, int]:
    """1-based (line, column) of a 0-based character offset."""
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def error_at(message: str, text: str | None, node: exp.Expression | None = None,
             position: int | None = None) -> QueryError:
    """A QueryError located at a tree node's first token (or at `position`)."""
    if position is None and node is not None:
        for n in node.walk():
            meta = n.meta if hasattr(n, "meta") else {}
            if "start" in meta:
                position = meta["start"]
                break
    if position is None or text is None:
        return QueryError(message)
    line, col = line_col(text, position)
    return QueryError(f"{message} (line {line}, column {col})", position=position, line=line,
                      column=col)


def _rewrite_operators(tree: exp.Expression) -> exp.Expression:
    def fix(node: exp.Expression) -> exp.Expression:
        name = _OPERATOR_CLASSES.get(type(node))
        if name is None:
            return node
        call = exp.Anonymous(this=OPERATOR_FUNCTIONS[name],
                             expressions=[node.this, node.expression])
        call.meta.update(node.this.meta if hasattr(node.this, "meta") else {})
        return call
    return tree.transform(fix, copy=False)


def _strip_explain(text: str) -> tuple[str, bool]:
    """`EXPLAIN <query>` -> (query, True), keeping positions by blanking the keyword."""
    m = re.match(r"\s*EXPLAIN\b", text, re.IGNORECASE)
    if not m:
        return text, False
    return " " * m.end() + text[m.end():], True


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_cached(text: str) -> tuple[exp.Expression, bool, int]:
    body, explain = _strip_explain(text)
    try:
        trees = sqlglot.parse(body, dialect=UnidbDialect)
    except RecursionError:
        # The parser recurses once per nesting level of the text and nowhere else, so this is
        # the statement's nesting, not a fault of ours.
        raise error_at("SQL nests too deeply for the parser (parentheses, subqueries, CASE or "
                       "function calls several dozen levels deep); flatten the statement",
                       text, position=_deepest_paren(body)) from None
    except TokenError:
        from unidb.query.filter_parse import _unclosed
        pos, what = _unclosed(body)
        raise error_at(f"unclosed {what} in SQL", text, position=pos) from None
    except ParseError as e:
        info = e.errors[0] if e.errors else {}
        line, col = info.get("line"), info.get("col")
        desc = info.get("description") or str(e)
        near = info.get("highlight")
        msg = f"SQL syntax error: {desc}" + (f" near {near!r}" if near else "")
        if line is None:
            m = _LINE_COL.search(str(e))
            line, col = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        if line is None:
            raise QueryError(msg) from None
        # sqlglot reports the column of the last character of the offending token.
        pos = position_of(text, line, col)
        if near:
            pos = max(pos - len(near) + 1, 0)
            line, col = line_col(text, pos)
        raise QueryError(f"{msg} (line {line}, column {col})", position=pos, line=line,
                         column=col) from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise QueryError(f"db.sql() runs exactly one statement, got {len(trees)}; split them "
                         f"into separate calls")
    tree = trees[0]
    _check_depth(tree, text)
    into = tree.find(exp.Into)
    if into is not None:
        raise error_at("SELECT ... INTO is not supported (it would create a table outside "
                       "unidb): CREATE TABLE with its column types, then INSERT INTO ... SELECT",
                       text, into)
    for f in tree.find_all(exp.Func):
        name = (f.name if isinstance(f, exp.Anonymous) else f.sql_name()).lower()
        if name in STATEFUL_FUNCTIONS:
            raise error_at(f"{name}() is not supported: it changes the state of the SQL engine's "
                           f"connection, which later statements share", text, f)
    if isinstance(tree, exp.Command):
        raise error_at(f"unsupported statement {tree.this!r}: unidb SQL runs SELECT, EXPLAIN, "
                       f"CREATE TABLE/INDEX, DROP TABLE/INDEX, INSERT, UPDATE and DELETE",
                       text, position=len(text) - len(text.lstrip()))
    tree = _rewrite_operators(tree)
    qmarks = [p for p in tree.find_all(exp.Placeholder)]
    numbered = [p for p in qmarks if not p.args.get("qmark")]
    if numbered and len(numbered) != len(qmarks):
        raise QueryError("mix of $n and ? parameters: use one style in a statement")
    nparams = 0
    for p in qmarks:
        if p.this is None or not str(p.this).isdigit():
            raise error_at(f"named parameter ${p.this} is not supported; use $1..$n or ?",
                           text, p)
        nparams = max(nparams, int(p.this))
    return tree, explain, nparams


def _check_depth(tree: exp.Expression, text: str) -> None:
    """QueryError (at the deepest node) when the tree is deeper than MAX_SQL_DEPTH."""
    stack = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        if d > MAX_SQL_DEPTH:
            raise error_at(f"SQL nests deeper than {MAX_SQL_DEPTH} levels; flatten the "
                           f"statement", text, node)
        stack.extend((child, d + 1) for child in node.iter_expressions())


def _deepest_paren(text: str) -> int | None:
    """Offset of the first opening parenthesis at the deepest nesting level of `text`."""
    try:
        tokens = UnidbDialect().tokenize(text)
    except TokenError:
        return None
    depth = deepest = 0
    at = None
    for tok in tokens:
        if tok.token_type == TokenType.L_PAREN:
            depth += 1
            if depth > deepest:
                deepest, at = depth, tok.start
        elif tok.token_type == TokenType.R_PAREN:
            depth -= 1
    return at


def parse(text: str) -> tuple[exp.Expression, bool, int]:
    """(statement tree, is EXPLAIN, number of parameters); the tree is shared: copy to edit."""
    if not isinstance(text, str):
        raise QueryError(f"SQL must be a str, got {type(text).__name__}")
    if not text.strip():
        raise QueryError("empty SQL statement")
    if len(text) > MAX_SQL_CHARS:
        raise QueryError(f"SQL of {len(text)} characters exceeds the limit of {MAX_SQL_CHARS}")
    return _parse_cached(text)


__all__ = ["parse", "UnidbDialect", "error_at", "line_col", "position_of"]
