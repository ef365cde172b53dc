"""`SearchResult`: what a search found, and how its rows are assembled from the snapshot the
search ran on (unidb/query/request.py has the request that produced it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import pyarrow as pa

from unidb.query.filter import ROWID
from unidb.schema import Schema

# The column a batch of queries adds: which query a result row answers.
QUERY = "_query"


class RowReader(Protocol):
    """Where a result's rows are read: a table snapshot (`TableState`) in the engine."""

    def take(self, row_ids: np.ndarray, columns: Sequence[str]) -> pa.Table: ...


def empty_table(schema: Schema, columns: Sequence[str]) -> pa.Table:
    """No rows, with `columns` typed as in `schema` (`_rowid` is Int64)."""
    fields = [schema.arrow.field(c) if c != ROWID else pa.field(ROWID, pa.int64())
              for c in columns]
    return pa.schema(fields).empty_table()


@dataclass(frozen=True, eq=False)
class SearchResult:
    """What a search found: per query, row ids (nearest / best first) and their values.

    `snapshot` is where the rows are read (the state the search ran on, so no row changes in
    between); `columns` the columns each result row carries (the primary key + selected);
    `value_column` is `_distance` or `_score`; `explain` one record per query."""
    row_ids: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]
    value_column: str
    single: bool
    explain: tuple[Any, ...]
    snapshot: RowReader
    schema: Schema
    columns: tuple[str, ...]

    def table(self, i: int = 0) -> pa.Table:
        """The rows of query `i`: the result columns then the value column."""
        ids, cols = self.row_ids[i], list(self.columns)
        rows = self.snapshot.take(ids, cols) if len(ids) else empty_table(self.schema, cols)
        return rows.append_column(self.value_column,
                                  pa.array(np.asarray(self.values[i]), type=pa.float64()))

    def to_arrow(self) -> pa.Table:
        """All results as one Arrow table (with a `_query` column when several queries ran)."""
        if self.single:
            return self.table(0)
        tables = []
        for i in range(len(self.row_ids)):
            t = self.table(i)
            tables.append(t.append_column(QUERY, pa.array(np.full(t.num_rows, i, np.int64))))
        return pa.concat_tables(tables)

    def to_list(self) -> list:
        """Results as a list of dicts (a list of such lists when several queries ran)."""
        lists = [self.table(i).to_pylist() for i in range(len(self.row_ids))]
        return lists[0] if self.single else lists


__all__ = ["SearchResult", "RowReader", "empty_table", "QUERY"]
