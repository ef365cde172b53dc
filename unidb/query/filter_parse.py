"""Filter text -> filter tree: a small recursive-descent parser over sqlglot's tokenizer.

Grammar (keywords case-insensitive; NOT binds tighter than AND, AND tighter than OR):

    filter    := disjunct (OR disjunct)*
    disjunct  := negation (AND negation)*
    negation  := NOT negation | predicate
    predicate := '(' filter ')' | MATCH '(' column ',' string ')'
               | operand (cmp operand | [NOT] IN '(' [literal (',' literal)*] ')'
                          | [NOT] BETWEEN literal AND literal | IS [NOT] NULL
                          | [NOT] LIKE string)?          -- a bare column means column = TRUE
    operand   := column | literal        literal := string | ['-'] number | TRUE | FALSE
    cmp       := = | != | <> | < | <= | > | >=

sqlglot reads the characters (quoting, '' escapes, numbers, comments) exactly as the SQL front
end does; the grammar is our own because sqlglot's parser accepts far more than a filter may
hold (`a b` is an alias there) and keeps no positions on operators, which our errors need.
"""
from __future__ import annotations

from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from unidb.errors import QueryError
from unidb.query.filter_tree import (MAX_DEPTH, PLAIN_NAME, Column, Compare, Expr, InList, Literal,
                                     LiteralValue, Match, Not, Operand, and_, as_predicate, or_,
                                     quote_name)

# Same dialect as the SQL front end, so a WHERE clause and a filter string read alike.
DIALECT = "duckdb"
_DIALECT = Dialect.get_or_raise(DIALECT)
# Parentheses / NOT nest at most as deep as a tree may (MAX_DEPTH, unidb.query.filter_tree); the
# parser checks it as it goes, since it recurses (about four Python frames per level).
# Longer filter text than this is refused before tokenizing: 1 MiB is far past any hand-written
# filter, and long IN lists belong in a join or an `ids=` argument.
MAX_FILTER_CHARS = 1 << 20
# Error messages quote the filter; past this many characters they quote only the part around
# the fault, so a long generated filter does not bury the message.
MAX_QUOTED_CHARS = 200

_COMPARE_TOKENS = {TokenType.EQ: "=", TokenType.NEQ: "!=", TokenType.LT: "<",
                   TokenType.LTE: "<=", TokenType.GT: ">", TokenType.GTE: ">="}
# Words the grammar gives meaning to; any other word (even one sqlglot calls a keyword, like
# `date` or `order`) is a column name.
_GRAMMAR_WORDS = {TokenType.AND, TokenType.OR, TokenType.NOT, TokenType.IN, TokenType.BETWEEN,
                  TokenType.IS, TokenType.NULL, TokenType.LIKE, TokenType.TRUE, TokenType.FALSE}
# (Trees print a column named like one of these words double-quoted: filter_tree.quote_name.)


def parse(text: str) -> Expr:
    """Parse filter text into a tree; QueryError with .position on any fault."""
    if not isinstance(text, str):
        raise QueryError(f"filter text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise QueryError("empty filter: give a condition such as \"price < 10\", or pass "
                         "where=None for no filter", position=0)
    if len(text) > MAX_FILTER_CHARS:
        raise QueryError(f"filter of {len(text)} characters exceeds the limit of "
                         f"{MAX_FILTER_CHARS}", position=MAX_FILTER_CHARS)
    try:
        tokens = _DIALECT.tokenizer().tokenize(text)    # a tokenizer is not shareable
    except TokenError:
        pos, what = _unclosed(text)
        raise QueryError(f"unclosed {what} at position {pos} in filter: {_excerpt(text, pos)}",
                         position=pos) from None
    return _Parser(text, tokens).parse()


def _excerpt(text: str, position: int) -> str:
    """The filter text for an error message, cut to the part around `position` if long."""
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    start = max(0, position - MAX_QUOTED_CHARS // 2)
    end = start + MAX_QUOTED_CHARS
    return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")


def _unclosed(text: str) -> tuple[int, str]:
    """Where the tokenizer gave up: the opening of a quote or comment never closed."""
    i, n = 0, len(text)
    while i < n:
        if text.startswith("--", i):                 # a line comment may hold stray quotes
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                return i, "comment"
            i = j + 2
            continue
        q = text[i]
        if q in "'\"":
            j = i + 1
            while True:
                j = text.find(q, j)
                if j < 0:
                    return i, "quote"
                if not text.startswith(q * 2, j):
                    break
                j += 2                               # a doubled quote is an escaped one
            i = j
        i += 1
    return 0, "text"


class _Parser:
    def __init__(self, text: str, tokens: list[Token]):
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    # -- token helpers ------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token | None:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def at(self, *types: TokenType, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok is not None and tok.token_type in types

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, expected: str, tok: Token | None = None, why: str = "") -> QueryError:
        tok = tok if tok is not None else self.peek()
        if tok is None:
            pos = len(self.text)
            what = "unexpected end of filter"
        else:
            pos = tok.start
            what = f"unexpected token {self.text[tok.start:tok.end + 1]!r}"
        detail = why or f"expected {expected}"
        return QueryError(f"{what} at position {pos} in filter: {_excerpt(self.text, pos)} "
                          f"({detail})",
                          position=pos)

    def expect(self, ttype: TokenType, expected: str) -> Token:
        if not self.at(ttype):
            raise self.error(expected)
        return self.advance()

    def is_name(self, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        if tok is None:
            return False
        if tok.token_type in (TokenType.VAR, TokenType.IDENTIFIER):
            return True
        # Judge the source text, not tok.text: a string token's text has lost its quotes.
        raw = self.text[tok.start:tok.end + 1]
        return tok.token_type not in _GRAMMAR_WORDS and bool(PLAIN_NAME.fullmatch(raw))

    # -- grammar ------------------------------------------------------------------------------
    def parse(self) -> Expr:
        result = self.disjunction()
        if self.peek() is not None:
            raise self.error("AND, OR or the end of the filter")
        return result

    def disjunction(self) -> Expr:
        terms = [self.conjunction()]
        while self.at(TokenType.OR):
            self.advance()
            terms.append(self.conjunction())
        return or_(*terms)

    def conjunction(self) -> Expr:
        terms = [self.negation()]
        while self.at(TokenType.AND):
            self.advance()
            terms.append(self.negation())
        return and_(*terms)

    def negation(self) -> Expr:
        if self.at(TokenType.NOT):
            with _Nesting(self):
                self.advance()
                return Not(self.negation())
        return self.predicate()

    def predicate(self) -> Expr:
        tok = self.peek()
        if self.at(TokenType.L_PAREN):
            with _Nesting(self):
                self.advance()
                inner = self.disjunction()
                if not self.at(TokenType.R_PAREN):
                    raise self.error(f"')' to close the '(' at position {tok.start}")
                self.advance()
                return inner
        if self.is_name() and self.at(TokenType.L_PAREN, ahead=1):
            return self.function()
        left, left_tok = self.operand()
        if self.peek() is not None and self.peek().token_type in _COMPARE_TOKENS:
            op = _COMPARE_TOKENS[self.advance().token_type]
            right, right_tok = self.operand()
            if not isinstance(left, Column) and not isinstance(right, Column):
                raise self.error("", right_tok, why="a comparison needs a column on one side")
            return Compare(op, left, right)
        negated = self.at(TokenType.NOT) and self.at(TokenType.IN, TokenType.BETWEEN,
                                                     TokenType.LIKE, ahead=1)
        if negated:
            self.advance()
        if self.at(TokenType.IN, TokenType.BETWEEN, TokenType.LIKE, TokenType.IS):
            if not isinstance(left, Column):
                raise self.error("", left_tok, why=f"{self.peek().text.upper()} needs a column "
                                 f"on its left")
            node = self.column_test(left)
            return Not(node) if negated else node
        if isinstance(left, Column):
            return as_predicate(left)        # a bare Bool column: `in_stock AND price < 9`
        raise self.error("", left_tok, why="a literal alone is not a condition")

    def column_test(self, column: Column) -> Expr:
        word = self.advance()
        if word.token_type == TokenType.IN:
            self.expect(TokenType.L_PAREN, "'(' to open the IN list")
            values: list[LiteralValue] = []
            if not self.at(TokenType.R_PAREN):
                values.append(self.literal()[0])
                while self.at(TokenType.COMMA):
                    self.advance()
                    values.append(self.literal()[0])
            self.expect(TokenType.R_PAREN, "',' or ')' in the IN list")
            return InList(column, tuple(values))
        if word.token_type == TokenType.BETWEEN:
            low = self.literal()[0]
            self.expect(TokenType.AND, "AND between the BETWEEN bounds")
            return column.between(low, self.literal()[0])
        if word.token_type == TokenType.LIKE:
            return column.like(self.expect(TokenType.STRING, "a quoted LIKE pattern").text)
        negated = self.at(TokenType.NOT)          # IS [NOT] NULL
        if negated:
            self.advance()
        self.expect(TokenType.NULL, "NULL after IS (IS NULL or IS NOT NULL)")
        return column.is_not_null() if negated else column.is_null()

    def function(self) -> Expr:
        name = self.advance()
        if name.text.upper() != "MATCH":
            raise self.error("", name, why=f"unsupported function {name.text!r}; the only "
                             f"function a filter may call is MATCH(column, 'text')")
        self.advance()                             # '('
        if not self.is_name():
            raise self.error("a column name as MATCH's first argument")
        column = self.column()
        self.expect(TokenType.COMMA, "',' after MATCH's column")
        query = self.expect(TokenType.STRING, "the quoted MATCH query text").text
        self.expect(TokenType.R_PAREN, "')' to close MATCH(")
        return Match(column, query)

    def operand(self) -> tuple[Operand, Token | None]:
        tok = self.peek()
        if self.is_name():
            return self.column(), tok
        value, tok = self.literal()
        return Literal(value), tok

    def column(self) -> Column:
        tok = self.advance()
        return Column(tok.text, position=tok.start)

    def literal(self) -> tuple[LiteralValue, Token]:
        tok = self.peek()
        if self.at(TokenType.STRING):
            return self.advance().text, tok
        if self.at(TokenType.TRUE, TokenType.FALSE):
            return self.advance().token_type == TokenType.TRUE, tok
        if self.at(TokenType.NULL):
            raise self.error("", tok, why="comparing with NULL is never true; use IS NULL or "
                             "IS NOT NULL")
        sign = 1
        if self.at(TokenType.DASH) and self.at(TokenType.NUMBER, ahead=1):
            self.advance()
            sign = -1
        if not self.at(TokenType.NUMBER):
            raise self.error("a column name or a literal (number, 'string', TRUE, FALSE)")
        number = self.advance()
        try:
            value = sign * (int(number.text) if number.text.isdigit() else float(number.text))
            return Literal(value).value, tok
        except (ValueError, QueryError) as e:
            raise self.error("", number, why=f"bad number: {e}") from None


class _Nesting:
    """Counts parenthesis / NOT depth so hostile nesting fails cleanly, not with RecursionError."""

    def __init__(self, parser: _Parser):
        self.parser = parser

    def __enter__(self) -> None:
        self.parser.depth += 1
        if self.parser.depth > MAX_DEPTH:
            raise self.parser.error("", why=f"filter nests deeper than {MAX_DEPTH} levels")

    def __exit__(self, *exc: object) -> None:
        self.parser.depth -= 1


__all__ = ["parse", "quote_name", "DIALECT", "MAX_DEPTH", "MAX_FILTER_CHARS"]
