"""`SearchBuilder`: the fluent query a user writes — `t.search(q).where(...).limit(10).to_list()`.

The builder holds one `SearchRequest` (unidb/query/request.py) and each step replaces it with
a new one, checked at that call against the table's schema, so a mistake raises where it was
made. Running it hands the request to an executor — `engine/execute.py` for an embedded table,
the server for a remote one (`unidb/client/remote.py` only swaps `_execute`) — and reads the
rows, `_distance` / `_score` and explain records from the `SearchResult` that comes back.
"""
from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa

from unidb.errors import QueryError
from unidb.query.explain import Explain
from unidb.query.request import SearchRequest, check_k
from unidb.query.result import SearchResult


def check_search_arguments(args: tuple, unknown: dict) -> None:
    """Table.search() takes the query vector positionally and everything else by name."""
    if args:
        raise QueryError(f"search() takes one positional argument (the query vector); pass "
                         f"the rest by name, e.g. column=, text=; got {len(args)} more")
    if unknown:
        raise QueryError(f"unknown argument(s) {sorted(unknown)} to search(); known: vector, "
                         f"column, text, sparse, vectors, weights, text_column, sparse_column")


class SearchBuilder:
    """A search being built on `table` (anything with `name`, `schema` and `len()`)."""

    def __init__(self, table, vector: Any = None, column: str | None = None,
                 text: str | None = None, sparse: Any = None, vectors: dict | None = None,
                 weights: dict | None = None, text_column: str | None = None,
                 sparse_column: str | None = None):
        self._table = table
        self._request = self._checked(SearchRequest(
            vector=vector, column=column, text=text, sparse=sparse, vectors=vectors,
            weights=weights, text_column=text_column, sparse_column=sparse_column))

    @classmethod
    def from_request(cls, table, request: SearchRequest) -> "SearchBuilder":
        """A builder on `table` holding `request` (checked against the table's schema)."""
        b = cls.__new__(cls)
        b._table = table
        b._request = b._checked(request)
        return b

    def _checked(self, request: SearchRequest) -> SearchRequest:
        request.resolve(self._table.schema, self._table.name)
        return request

    def _with(self, **changes: Any) -> "SearchBuilder":
        self._request = self._checked(self._request.replace(**changes))
        return self

    # -- building --------------------------------------------------------------------------
    def where(self, filter: Any) -> "SearchBuilder":
        """Restrict to rows matching a filter string or `unidb.col(...)` expression."""
        return self._with(where=filter)

    def limit(self, k: int) -> "SearchBuilder":
        """Return at most k rows per query (10 unless set; a range returns all unless set)."""
        return self._with(limit=check_k(k))      # here None is a mistake, not "unset"

    def select(self, columns: Sequence[str]) -> "SearchBuilder":
        """Return only these columns (and the primary key) beside `_distance` / `_score`."""
        return self._with(select=columns)

    def distance_range(self, min: float | None = None, max: float | None = None
                       ) -> "SearchBuilder":
        """Return every row whose distance lies in [min, max] (no limit unless one is set)."""
        return self._with(distance_range=(min, max))

    def params(self, **knobs: Any) -> "SearchBuilder":
        """Per-query knobs for the access path (e.g. nprobe=, eps2=, exact=True); a knob set
        to None goes back to its default. Names and values are checked (unidb.query.knobs)."""
        return self._with(params={**self._request.params, **knobs})

    def fuse(self, method: str = "rrf", **options: Any) -> "SearchBuilder":
        """How hybrid (vector + text/sparse) results combine: "rrf" (k=60) or "linear"
        (weights= per source, normalize="minmax" or "zscore")."""
        return self._with(fuse=(method, options))

    def request(self) -> SearchRequest:
        """The search as a value: what runs, and what travels to a server."""
        return self._request

    # -- running ---------------------------------------------------------------------------
    def _execute(self, request: SearchRequest, explain: bool) -> SearchResult:
        """Run `request` on this builder's table (`explain`: the caller reads the explain
        records; the embedded engine always makes them)."""
        return self._table.execute(request)

    def run(self) -> SearchResult:
        """Run the search: row ids and values per query, explain records, and the snapshot
        the rows are read from."""
        return self._execute(self._request, explain=True)

    def to_arrow(self) -> pa.Table:
        """Results as one Arrow table (with a `_query` column when several queries ran)."""
        return self._execute(self._request, explain=False).to_arrow()

    def to_pandas(self):
        return self.to_arrow().to_pandas()

    def to_list(self) -> list:
        """Results as a list of dicts (a list of such lists when several queries ran)."""
        return self._execute(self._request, explain=False).to_list()

    def explain(self, run: bool = True):
        """The plan and counters of this search (one record, or a list for several queries);
        run=False describes the request without running it."""
        if not run:
            r = self._request
            ex = Explain(operator="topk", plan="(not run)", rows_total=len(self._table), k=r.k)
            ex.details["filter"] = None if r.where is None else r.where.to_sql()
            return ex
        records = self.run().explain
        return records[0] if len(records) == 1 else list(records)
