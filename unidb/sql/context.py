"""`Context`: one SQL statement's state — database, text, parameters, DuckDB session, EXPLAIN
steps — and how constants (literals, `$n` / `?` parameters, vector values) are read.

A vector may be a scalar subquery, which only the planner can run; the planner sits above this
module (it imports it), so it hands its `run_query` to the Context instead of being imported."""
from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np
import pyarrow as pa
from sqlglot import exp

from unidb.errors import NotFoundError, QueryError, SchemaError
from unidb.sql.filters import NotConvertible
from unidb.sql.functions import as_vector
from unidb.sql.parser import error_at
from unidb.sql.relational import Session

class Context:
    """One statement's state: the database, SQL text, parameters, DuckDB session, explain."""

    def __init__(self, db, text: str, params: list, explain: bool = False, *,
                 run_query: Callable[[Context, exp.Expression], pa.Table]):
        self.db = db
        self.text = text
        self.params = params
        self.explain = explain
        self.steps: list[dict] = []
        self.cte_names: set[str] = set()
        self.shared = False          # True while reading a cached parse tree (never edited)
        self._session: Session | None = None
        self._ids = itertools.count()
        self._run_query = run_query       # unidb.sql.planner.run_query: runs a subquery

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session()
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def fresh(self, prefix: str) -> str:
        return f"__unidb_{prefix}_{next(self._ids)}"

    def step(self, step: str, engine: str, detail: Any) -> None:
        self.steps.append({"step": step, "engine": engine, "detail": detail})

    def table(self, name: str):
        """The unidb table a FROM name refers to, or None (a CTE, or not a unidb table)."""
        if name in self.cte_names:
            return None
        try:
            return self.db.open_table(name)
        except (NotFoundError, SchemaError):      # not a name a unidb table can have
            return None

    # -- constants ---------------------------------------------------------------------------
    def param(self, node: exp.Placeholder) -> Any:
        i = int(node.this)
        if i > len(self.params):
            raise error_at(f"parameter ${i} has no value: {len(self.params)} parameter(s) "
                           f"given", self.text, node)
        return self.params[i - 1]

    def constant(self, node: exp.Expression) -> Any:
        """A literal or parameter's Python value; NotConvertible if it is not a constant."""
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Placeholder):
            return self.param(node)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return node.this
            text = node.this
            try:
                return int(text)
            except ValueError:
                return float(text)
        if isinstance(node, exp.Boolean):
            return bool(node.this)
        if isinstance(node, exp.Null):
            return None
        if isinstance(node, exp.Neg):
            v = self.constant(node.this)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v
        if isinstance(node, exp.Array):
            return [self.constant(e) for e in node.expressions]
        raise NotConvertible(node)

    def vector(self, node: exp.Expression) -> np.ndarray | None:
        """The vector a distance argument holds, or None when it is not a constant."""
        while isinstance(node, (exp.Paren, exp.Cast)):
            node = node.this
        if isinstance(node, (exp.Subquery, exp.Select)):
            return self._scalar_subquery(node)
        try:
            value = self.constant(node)
        except NotConvertible:
            return None
        if isinstance(value, (int, float)) or value is None:
            raise error_at(f"{node.sql()} is not a vector", self.text, node)
        try:
            return as_vector(value, "the query vector")
        except QueryError as e:
            raise error_at(str(e), self.text, node) from None

    def _scalar_subquery(self, node: exp.Expression) -> np.ndarray:
        inner = node.this if isinstance(node, exp.Subquery) else node
        shared, self.shared = self.shared, False        # the copy below is edited in place
        explain, self.explain = self.explain, False     # EXPLAIN needs the vector's value
        try:
            result = self._run_query(self, inner.copy())
        finally:
            self.shared, self.explain = shared, explain
        if result.num_columns != 1 or result.num_rows != 1:
            raise error_at(f"a vector subquery must return one row and one column, got "
                           f"{result.num_rows} x {result.num_columns}", self.text, node)
        return as_vector(result.column(0)[0].as_py(), "vector subquery result")


__all__ = ["Context"]
