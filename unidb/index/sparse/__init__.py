"""Inverted indexes over row ids: BM25 full text, sparse vectors, and score fusion
(OneSparse, ALGORITHMS.md §4). See docs/text-search.md."""
from unidb.index.sparse.analyzer import ENGLISH_STOPWORDS, Analyzer
from unidb.index.sparse.fusion import (ScoresSource, IndexSource, RankedSource, ScoreStats,
                                       exact_fused_topk, fuse_linear, fuse_rrf)
from unidb.index.sparse.sparse_vec import SparseIndex
from unidb.index.sparse.text import TextIndex

__all__ = ["Analyzer", "ENGLISH_STOPWORDS", "TextIndex", "SparseIndex", "fuse_rrf",
           "fuse_linear", "exact_fused_topk", "IndexSource", "ScoresSource", "RankedSource",
           "ScoreStats"]
