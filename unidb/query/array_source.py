"""ArraySource: the DataSource protocol over in-memory numpy arrays and a pyarrow table.

The table layer gives the executor a snapshot with the same methods; this one serves tests,
benchmarks and embedding callers that hold plain arrays. Row ids are positions 0..n-1.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from unidb.errors import NotFoundError
from unidb.index.rowfilter import RowFilter
from unidb.options import DEFAULT, PlannerOptions


class DataSource(Protocol):
    """What the executor needs from a table snapshot (all row ids are internal row ids)."""

    planner_options: PlannerOptions        # the cost thresholds of plan choice
    def live_rowmask(self) -> np.ndarray: ...
    def row_filter(self, expr) -> RowFilter: ...
    def vector_column(self, name: str) -> tuple[int, str]: ...
    def vectors(self, name: str, row_ids: np.ndarray) -> np.ndarray: ...
    def flat_rows(self, name: str) -> tuple[np.ndarray, np.ndarray]: ...
    def vector_index(self, name: str): ...
    def scalar_index(self, name: str): ...


def evaluate_expr(expr: Any, table: pa.Table) -> np.ndarray:
    """A filter as a bool array over the table's rows.

    Accepts a unidb.query.filter Expr (anything with `.evaluate(table)`), a filter string
    (parsed with unidb.query.filter.parse_filter), a bool array, or a callable(table)."""
    if isinstance(expr, str):
        from unidb.query.filter import parse_filter   # the filter language, when present
        expr = parse_filter(expr)
    if hasattr(expr, "evaluate"):
        out = expr.evaluate(table)
    elif callable(expr):
        out = expr(table)
    else:
        out = expr
    out = np.asarray(out, dtype=bool)
    if out.shape != (table.num_rows,):
        raise ValueError(f"filter produced shape {out.shape}, expected ({table.num_rows},)")
    return out


class ArraySource:
    """Vector columns as (n, dim) float32 arrays, scalar columns as a pyarrow table."""

    def __init__(self, vectors: dict[str, np.ndarray], metrics: dict[str, str] | None = None,
                 scalars: pa.Table | dict | None = None, deleted: np.ndarray | None = None,
                 planner_options: PlannerOptions | None = None):
        if not vectors:
            raise ValueError("ArraySource needs at least one vector column")
        self._vec = {c: np.ascontiguousarray(v, dtype=np.float32) for c, v in vectors.items()}
        sizes = {len(v) for v in self._vec.values()}
        if len(sizes) != 1:
            raise ValueError(f"vector columns differ in length: {sizes}")
        self.n = sizes.pop()
        self._metric = {c: (metrics or {}).get(c, "l2") for c in self._vec}
        if scalars is None:
            scalars = pa.table({"_row": pa.array(np.arange(self.n))})
        elif isinstance(scalars, dict):
            scalars = pa.table(scalars)
        if scalars.num_rows != self.n:
            raise ValueError(f"scalar table has {scalars.num_rows} rows, vectors have {self.n}")
        self.table = scalars
        self._live = np.ones(self.n, dtype=bool)
        if deleted is not None:
            self._live[np.asarray(deleted, dtype=np.int64)] = False
        self._vindex: dict[str, Any] = {}
        self._sindex: dict[str, Any] = {}
        self.filter_evaluations = 0
        self.planner_options = planner_options if planner_options is not None else DEFAULT.planner

    # -- protocol --------------------------------------------------------------------------

    def live_rowmask(self) -> np.ndarray:
        return self._live

    def row_filter(self, expr) -> RowFilter:
        """The live rows that satisfy `expr` (every live row when None), evaluated once."""
        if expr is None:
            return RowFilter(self._live)
        self.filter_evaluations += 1
        return RowFilter(self._live & evaluate_expr(expr, self.table))

    def filter_rows(self, expr, row_ids: np.ndarray) -> np.ndarray:
        """The filter evaluated on the given rows only (bool per row id, live rows only)."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        live = self._live[row_ids]
        if expr is None:
            return live
        return live & evaluate_expr(expr, self.table.take(pa.array(row_ids)))

    def vector_column(self, name: str) -> tuple[int, str]:
        self._check(name)
        return self._vec[name].shape[1], self._metric[name]

    def vectors(self, name: str, row_ids: np.ndarray) -> np.ndarray:
        self._check(name)
        return self._vec[name][np.asarray(row_ids, dtype=np.int64)]

    def flat_rows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        self._check(name)
        if self._live.all():
            return np.arange(self.n, dtype=np.int64), self._vec[name]
        ids = np.flatnonzero(self._live).astype(np.int64)
        return ids, self._vec[name][ids]

    def vector_index(self, name: str):
        return self._vindex.get(name)

    def scalar_index(self, name: str):
        return self._sindex.get(name)

    # -- building ----------------------------------------------------------------------------

    def set_vector_index(self, name: str, index) -> None:
        """Attach an index over this column's live rows (e.g. a PartitionIndex)."""
        self._check(name)
        self._vindex[name] = index

    def build_scalar_index(self, name: str):
        """Build and attach a SortedIndex on a numeric scalar column."""
        from unidb.index.scalar.sorted_index import SortedIndex
        if name not in self.table.column_names:
            raise NotFoundError(f"no scalar column {name!r}; columns: {self.table.column_names}")
        ids = np.flatnonzero(self._live)
        col = self.table.column(name).combine_chunks().take(pa.array(ids))
        self._sindex[name] = SortedIndex.build(ids, col)
        return self._sindex[name]

    def _check(self, name: str) -> None:
        if name not in self._vec:
            raise NotFoundError(f"no vector column {name!r}; columns: {sorted(self._vec)}")
