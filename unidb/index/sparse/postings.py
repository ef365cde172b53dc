"""Immutable segments of blocked, doc-id ordered postings (ALGORITHMS.md §4).

A segment holds a set of documents (rows) sorted by row id; local doc id i is the i-th of them,
so local order equals row-id order and ties broken by local id are ties broken by row id.
Per term the postings are (local doc, value) in doc order, cut into fixed blocks of
`BLOCK` entries with (last doc, max value, aux) per block. A forward copy (doc -> terms) serves
deletes (to keep document frequencies of live docs exact) and merges.

Only `live` changes after a segment is built (deletes clear entries in place).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unidb.kernels.sparse import lookup_terms

# Postings per block. 128 is Lucene's and PISA's choice: small enough for tight block-max
# bounds, large enough that the per-block metadata (12 bytes) is under 10% of the postings.
BLOCK = 128

# Array names that make up a segment on disk (the rest is derived on load).
SEGMENT_ARRAYS = ("row_ids", "doc_len", "terms", "term_ptr", "post_doc", "post_val",
                  "term_blk", "blk_last", "blk_max", "blk_aux", "doc_ptr", "fwd_term",
                  "fwd_val")


@dataclass
class Segment:
    row_ids: np.ndarray    # int64[n] ascending
    doc_len: np.ndarray    # float32[n] (BM25 document length; zeros for sparse vectors)
    terms: np.ndarray      # int32[T] ascending global term ids present here
    term_ptr: np.ndarray   # int64[T+1] posting range per term
    post_doc: np.ndarray   # int32[P] local doc ids
    post_val: np.ndarray   # float32[P] tf or weight
    term_blk: np.ndarray   # int64[T+1] block range per term
    blk_last: np.ndarray   # int32[B] last local doc of each block
    blk_max: np.ndarray    # float32[B] max value in the block
    blk_aux: np.ndarray    # float32[B] min doc length (BM25) / min value (dot)
    doc_ptr: np.ndarray    # int64[n+1] forward range per doc
    fwd_term: np.ndarray   # int32[P] term ids of each doc
    fwd_val: np.ndarray    # float32[P]
    live: np.ndarray = field(default=None)  # uint8[n], 1 = not deleted
    seg_id: int = -1
    # Query-time BM25 cache (not persisted): per posting tf / (tf + norm(dl)) and, per term,
    # the statistics version it was computed under (-1 = never).
    bm25_cache: np.ndarray = field(default=None, repr=False)
    bm25_ver: np.ndarray = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.live is None:
            self.live = np.ones(len(self.row_ids), np.uint8)

    @property
    def n_docs(self) -> int:
        return len(self.row_ids)

    @property
    def n_live(self) -> int:
        return int(self.live.sum())

    def nbytes(self) -> int:
        cache = 0 if self.bm25_cache is None else self.bm25_cache.nbytes + self.bm25_ver.nbytes
        return sum(getattr(self, a).nbytes for a in SEGMENT_ARRAYS) + self.live.nbytes + cache

    def locate(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, local ids) of the given rows; local id is meaningless where not found."""
        loc = np.searchsorted(self.row_ids, row_ids)
        loc = np.minimum(loc, max(self.n_docs - 1, 0))
        found = (self.n_docs > 0) & (self.row_ids[loc] == row_ids) if self.n_docs else \
            np.zeros(len(row_ids), bool)
        return found, loc

    def lookup(self, terms: np.ndarray) -> tuple[np.ndarray, ...]:
        """Posting and block ranges of the query terms (empty ranges for absent terms)."""
        return lookup_terms(self.terms, self.term_ptr, self.term_blk,
                            np.ascontiguousarray(terms, np.int32))[:4]

    def lookup_local(self, terms: np.ndarray) -> tuple[np.ndarray, ...]:
        """lookup() plus each query term's local index here (-1 when absent)."""
        return lookup_terms(self.terms, self.term_ptr, self.term_blk,
                            np.ascontiguousarray(terms, np.int32))

    def arrays(self) -> dict[str, np.ndarray]:
        return {a: getattr(self, a) for a in SEGMENT_ARRAYS}


def forward_positions(doc_ptr: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Positions in the forward arrays of the terms of `docs`, doc after doc."""
    starts = doc_ptr[docs]
    counts = doc_ptr[docs + 1] - starts
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1])) if len(counts) else counts
    return np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))


def build_segment(row_ids: np.ndarray, doc_ptr: np.ndarray, fwd_term: np.ndarray,
                  fwd_val: np.ndarray, doc_len: np.ndarray, aux_is_doc_len: bool) -> Segment:
    """Build a segment from forward form: doc i has terms fwd_term[doc_ptr[i]:doc_ptr[i+1]]
    (unique within the doc). Docs need not be sorted by row id."""
    row_ids = np.asarray(row_ids, np.int64)
    n = len(row_ids)
    order = np.argsort(row_ids, kind="stable")
    counts = np.diff(doc_ptr)
    if not np.array_equal(order, np.arange(n)):
        row_ids = row_ids[order]
        doc_len = doc_len[order]
        idx = forward_positions(np.asarray(doc_ptr, np.int64), order)
        counts = counts[order]
        fwd_term = fwd_term[idx]
        fwd_val = fwd_val[idx]
        doc_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    fwd_term = np.ascontiguousarray(fwd_term, np.int32)
    fwd_val = np.ascontiguousarray(fwd_val, np.float32)
    doc_len = np.ascontiguousarray(doc_len, np.float32)
    doc_of = np.repeat(np.arange(n, dtype=np.int32), counts)
    # Postings: sort by (term, doc); docs are already ascending inside each term (stable).
    porder = np.argsort(fwd_term, kind="stable")
    post_term = fwd_term[porder]
    post_doc = doc_of[porder]
    post_val = fwd_val[porder]
    terms, first, tcounts = np.unique(post_term, return_index=True, return_counts=True)
    term_ptr = np.concatenate((first, [len(post_term)])).astype(np.int64)
    nblk = (tcounts + BLOCK - 1) // BLOCK
    term_blk = np.concatenate(([0], np.cumsum(nblk))).astype(np.int64)
    # Block b of term t starts at posting term_ptr[t] + BLOCK * (b - term_blk[t]).
    blk_term = np.repeat(np.arange(len(terms)), nblk)
    blk_start = term_ptr[blk_term] + BLOCK * (np.arange(term_blk[-1]) - term_blk[blk_term])
    blk_end = np.minimum(blk_start + BLOCK, term_ptr[blk_term + 1])
    if len(blk_start):
        blk_last = post_doc[blk_end - 1].astype(np.int32)
        blk_max = np.maximum.reduceat(post_val, blk_start).astype(np.float32)
        aux_src = doc_len[post_doc] if aux_is_doc_len else post_val
        blk_aux = np.minimum.reduceat(aux_src, blk_start).astype(np.float32)
    else:
        blk_last = np.zeros(0, np.int32)
        blk_max = np.zeros(0, np.float32)
        blk_aux = np.zeros(0, np.float32)
    return Segment(row_ids=row_ids, doc_len=doc_len, terms=terms.astype(np.int32),
                   term_ptr=term_ptr, post_doc=np.ascontiguousarray(post_doc, np.int32),
                   post_val=np.ascontiguousarray(post_val, np.float32), term_blk=term_blk,
                   blk_last=blk_last, blk_max=blk_max, blk_aux=blk_aux,
                   doc_ptr=np.asarray(doc_ptr, np.int64), fwd_term=fwd_term, fwd_val=fwd_val)


def empty_segment(aux_is_doc_len: bool) -> Segment:
    return build_segment(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32),
                         np.zeros(0, np.float32), np.zeros(0, np.float32), aux_is_doc_len)


def merge_segments(segments: list[Segment], aux_is_doc_len: bool) -> Segment:
    """One segment holding the live docs of `segments` (deleted docs dropped)."""
    rows, ptrs, terms, vals, lens = [], [], [], [], []
    for s in segments:
        keep = np.flatnonzero(s.live)
        if len(keep) == 0:
            continue
        counts = s.doc_ptr[keep + 1] - s.doc_ptr[keep]
        idx = forward_positions(s.doc_ptr, keep)
        rows.append(s.row_ids[keep])
        ptrs.append(counts)
        terms.append(s.fwd_term[idx])
        vals.append(s.fwd_val[idx])
        lens.append(s.doc_len[keep])
    if not rows:
        return empty_segment(aux_is_doc_len)
    counts = np.concatenate(ptrs)
    return build_segment(np.concatenate(rows), np.concatenate(([0], np.cumsum(counts))),
                         np.concatenate(terms), np.concatenate(vals), np.concatenate(lens),
                         aux_is_doc_len)


def segment_from_arrays(arrays: dict[str, np.ndarray], live: np.ndarray, seg_id: int) -> Segment:
    return Segment(**{a: arrays[a] for a in SEGMENT_ARRAYS}, live=live, seg_id=seg_id)
