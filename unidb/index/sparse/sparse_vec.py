"""SparseIndex: sparse vectors {term_id: weight} over row ids, ranked by dot product.

Same blocked postings and exact MaxScore top-k as TextIndex; a posting holds the document's
weight. Negative weights (in documents or queries) are allowed: a block's bound is the largest
POSITIVE contribution any of its postings can make (max(0, q*max, q*min)), which stays a valid
upper bound, so results stay exact. A document is a match when it shares at least one term
with the query (with zero-weight query terms dropped); only matching documents are ranked, even
when their dot product is <= 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from unidb.errors import ValidationError
from unidb.index.sparse.inverted import Allow, InvertedIndex
from unidb.index.sparse.scan import IndexScan
from unidb.kernels import sparse as K

SparseVec = tuple[np.ndarray, np.ndarray]


def _check(indices, values, what: str) -> SparseVec:
    i = np.asarray(indices)
    v = np.asarray(values, np.float32)
    if i.ndim != 1 or v.ndim != 1 or len(i) != len(v):
        raise ValidationError(f"{what}: indices and values must be 1-D of equal length, "
                              f"got shapes {i.shape} and {v.shape}")
    if len(i) and (i.min() < 0 or i.max() > np.iinfo(np.int32).max):
        raise ValidationError(f"{what}: term ids must be in [0, 2**31), got {i.min()}..{i.max()}")
    i = i.astype(np.int32)
    if len(i) > 1 and not (np.diff(i) > 0).all():
        raise ValidationError(f"{what}: indices must be strictly increasing (sorted, unique)")
    if not np.isfinite(v).all():
        raise ValidationError(f"{what}: values must be finite")
    return i, v


class SparseIndex(InvertedIndex):
    """Dot-product index over sparse vectors (exact top-k with MaxScore pruning)."""

    _MODE = K.MODE_DOT
    _AUX_IS_DOC_LEN = False
    _KIND = "sparse"

    def add(self, row_ids, vectors: Sequence[SparseVec | None]) -> None:
        """Index (indices int32 sorted unique, values float32) per row; None or an empty
        vector leaves the row out. Searchable immediately."""
        terms, vals = [], []
        for n, vec in enumerate(vectors):
            if vec is None:
                i, v = np.zeros(0, np.int32), np.zeros(0, np.float32)
            else:
                i, v = _check(vec[0], vec[1], f"vector {n}")
            terms.append(i)
            vals.append(v)
        self._add_docs(row_ids, terms, vals, np.zeros(len(vectors)))

    @staticmethod
    def query_terms(q_indices, q_values) -> tuple[np.ndarray, np.ndarray]:
        i, v = _check(q_indices, q_values, "query")
        keep = v != 0
        return i[keep], v[keep].astype(np.float64)

    def search(self, q_indices, q_values, k: int, allow: Allow | None = None, *,
               exhaustive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by dot product: (row ids, scores), best first, ties by smaller row id."""
        terms, qw = self.query_terms(q_indices, q_values)
        return self._topk(terms, qw, int(k), allow, exhaustive)

    def score_all(self, q_indices, q_values, allow: Allow | None = None):
        """Exhaustive reference: every doc sharing a term with the query, best first."""
        return self._score_all(*self.query_terms(q_indices, q_values), allow)

    def scores_for(self, q_indices, q_values, row_ids) -> np.ndarray:
        """Dot product of each given row with the query; NaN for rows not indexed, deleted or
        sharing no term with the query."""
        return self._scores_for(*self.query_terms(q_indices, q_values), row_ids)

    def upper_bound(self, q_indices, q_values) -> float:
        return self._upper_bound(*self.query_terms(q_indices, q_values))

    def match_mask(self, q_indices, q_values, row_ids) -> np.ndarray:
        return ~np.isnan(self.scores_for(q_indices, q_values, row_ids))

    def scan(self, q_indices, q_values, allow: Allow | None = None) -> IndexScan:
        return IndexScan(self, *self.query_terms(q_indices, q_values), allow)

    @classmethod
    def _from_config(cls, config: dict) -> "SparseIndex":
        return cls()
