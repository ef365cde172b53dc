"""`unidb.similarity_join(left, right, on=(...), max_distance=r | k=n)`: pairs of rows whose
vectors are close, streamed as Arrow batches of primary keys and distances.

Each left row seeds a range (or top-k) scan of the right table (VBase §1): through the right
column's partition index with the relaxed-monotonic stop when it has one, else blocks of left
rows against the matching right rows with one GEMM each. The cross product never exists.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from unidb.errors import QueryError


class SimilarityJoin:
    """An iterable of RecordBatches (left key, right key, `_distance`); `.to_arrow()` collects."""

    def __init__(self, left, right, on: tuple[str, str], max_distance: float | None,
                 k: int | None, where_left: Any, where_right: Any, params: dict | None):
        if not isinstance(on, (tuple, list)) or len(on) != 2:
            raise QueryError("on= must be a pair of vector column names (left, right)")
        if (max_distance is None) == (k is None):
            raise QueryError("similarity_join needs exactly one of max_distance= or k=")
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))
                              or k < 1):
            raise QueryError(f"k must be a positive integer, got {k!r}")
        if max_distance is not None and not np.isfinite(max_distance):
            raise QueryError(f"max_distance must be a finite number, got {max_distance!r}")
        self.left, self.right = left, right
        self.on = (left.vector_column(on[0])[0], right.vector_column(on[1])[0])
        self.max_distance, self.k = max_distance, k
        self.where_left = left._filter(where_left) if where_left is not None else None
        self.where_right = right._filter(where_right) if where_right is not None else None
        self.params = dict(params or {})
        self.explain: list = []
        lk, rk = left.primary_key, right.primary_key
        self.names = (f"left_{lk}", f"right_{rk}") if lk == rk or left is right else (lk, rk)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        from unidb.query.planner import similarity_join
        lsrc, rsrc = self.left.data_source(), self.right.data_source()
        ls, rs = lsrc.state, rsrc.state
        params = dict(self.params)
        params["explain"] = self.explain
        batches = similarity_join(lsrc, rsrc,
                                  self.on, max_distance=self.max_distance, k=self.k,
                                  expr_left=self.where_left, expr_right=self.where_right,
                                  params=params)
        lpk, rpk = self.left.primary_key, self.right.primary_key
        for lids, rids, d in batches:
            lkeys = ls.take(lids, [lpk]).column(0)
            rkeys = rs.take(rids, [rpk]).column(0)
            yield pa.RecordBatch.from_arrays(
                [lkeys.combine_chunks(), rkeys.combine_chunks(), pa.array(d, pa.float64())],
                names=[self.names[0], self.names[1], "_distance"])

    def to_arrow(self) -> pa.Table:
        batches = list(self)
        if not batches:
            lt = self.left.schema.arrow.field(self.left.primary_key).type
            rt = self.right.schema.arrow.field(self.right.primary_key).type
            return pa.schema([(self.names[0], lt), (self.names[1], rt),
                              ("_distance", pa.float64())]).empty_table()
        return pa.Table.from_batches(batches)

    def to_pandas(self):
        return self.to_arrow().to_pandas()


def similarity_join(left, right, on: tuple[str, str], *, max_distance: float | None = None,
                    k: int | None = None, where_left: Any = None, where_right: Any = None,
                    params: dict | None = None) -> SimilarityJoin:
    """Pairs (left row, right row) with distance <= max_distance, or each left row's k
    nearest right rows; filters restrict either side. Lazy: iterate or call .to_arrow()."""
    return SimilarityJoin(left, right, on, max_distance, k, where_left, where_right, params)
