"""TextIndex: full-text search ranked by BM25 over an inverted index of row ids.

BM25 in Lucene's form (Lucene 8+, ALGORITHMS.md §4):
    idf(t)      = ln(1 + (N - df + 0.5) / (df + 0.5))
    score(d, q) = sum over distinct query terms t of
                  qtf(t) * idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl))
with N, df and avgdl over the LIVE documents (see inverted.py), dl = the number of analyzed
terms of the document, qtf = how often t occurs in the analyzed query (Lucene sums a repeated
clause, which is the same). The classic (k1 + 1) numerator factor is left out as Lucene 8+
does: it scales every score by the same constant and changes no ranking.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from unidb.index.sparse.analyzer import Analyzer
from unidb.index.sparse.inverted import Allow, InvertedIndex
from unidb.index.sparse.scan import IndexScan
from unidb.kernels import sparse as K
from unidb.storage import files

_EMPTY_I = np.zeros(0, np.int32)
_EMPTY_F = np.zeros(0, np.float32)


class TextIndex(InvertedIndex):
    """BM25 full-text index over row ids (exact top-k with MaxScore pruning)."""

    _MODE = K.MODE_BM25
    _AUX_IS_DOC_LEN = True
    _KIND = "text"
    _TRACK_DF = True

    def __init__(self, analyzer: Analyzer | None = None, k1: float = 1.2, b: float = 0.75) -> None:
        super().__init__()
        self.analyzer = analyzer if analyzer is not None else Analyzer()
        self.k1 = float(k1)
        self.b = float(b)
        self._vocab: dict[str, int] = {}
        self._vocab_file: str | None = None
        self._vocab_saved = 0

    # ------------------------------------------------------------------ updates
    def add(self, row_ids, texts: Sequence[str | None]) -> None:
        """Index texts under the given row ids; searchable immediately. None (or a text with
        no terms after analysis) leaves the row out of the index."""
        vocab = self._vocab
        analyze = self.analyzer.analyze
        terms, vals, lens = [], [], np.zeros(len(texts))
        for i, text in enumerate(texts):
            toks = analyze(text) if text else ()
            if not toks:
                terms.append(_EMPTY_I)
                vals.append(_EMPTY_F)
                continue
            ids = np.array([vocab.setdefault(t, len(vocab)) for t in toks], np.int32)
            u, c = np.unique(ids, return_counts=True)
            terms.append(u)
            vals.append(c.astype(np.float32))
            lens[i] = len(toks)
        self._grow_df(len(vocab))   # new terms get df slots even if the batch is rejected
        self._add_docs(row_ids, terms, vals, lens)

    # ------------------------------------------------------------------ queries
    def _params(self) -> tuple[float, float, float]:
        avgdl = self._sum_len / self._n_live if self._n_live > 0 else 1.0
        return self.k1, self.b, avgdl

    def query_terms(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(term ids, query weights qtf * idf) of the analyzed query; unknown terms dropped."""
        vocab, df_all = self._vocab, self._df
        qtf: dict[int, int] = {}
        for tok in self.analyzer.analyze(query):
            i = vocab.get(tok)
            if i is not None:
                qtf[i] = qtf.get(i, 0) + 1
        ids = sorted(i for i in qtf if df_all[i] > 0)
        if not ids:
            return _EMPTY_I, np.zeros(0)
        n = self._n_live
        # a handful of terms: plain Python floats beat numpy's per-call overhead here
        qw = [qtf[i] * math.log(1.0 + (n - float(df_all[i]) + 0.5) / (float(df_all[i]) + 0.5))
              for i in ids]
        return np.array(ids, np.int32), np.array(qw)

    def search(self, query: str, k: int, allow: Allow | None = None, *,
               exhaustive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Exact BM25 top-k: (row ids int64, scores float64), best first, ties by smaller row
        id. `allow` (the query's RowFilter, or `allow(row_ids) -> bool mask`) restricts the
        candidate rows."""
        terms, qw = self.query_terms(query)
        return self._topk(terms, qw, int(k), allow, exhaustive)

    def score_all(self, query: str, allow: Allow | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive reference: every doc matching a query term (score > 0), best first."""
        return self._score_all(*self.query_terms(query), allow)

    def scores_for(self, query: str, row_ids) -> np.ndarray:
        """BM25 score of each given row; NaN for rows not indexed, deleted, or matching no
        query term (their BM25 score would be 0)."""
        return self._scores_for(*self.query_terms(query), row_ids)

    def upper_bound(self, query: str) -> float:
        """An upper bound on the score of any document for `query`."""
        return self._upper_bound(*self.query_terms(query))

    def match_mask(self, query: str, row_ids) -> np.ndarray:
        """True for the rows that contain at least one analyzed query term (filter MATCH)."""
        return ~np.isnan(self.scores_for(query, row_ids))

    def scan(self, query: str, allow: Allow | None = None) -> IndexScan:
        """Exact-order scan: batches of (row ids, -score), best first."""
        return IndexScan(self, *self.query_terms(query), allow)

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict:
        return {"analyzer": self.analyzer.to_dict(), "k1": self.k1, "b": self.b}

    @classmethod
    def _from_config(cls, config: dict) -> "TextIndex":
        return cls(Analyzer.from_json(config["analyzer"]), config["k1"], config["b"])

    def _extra_files(self, folder, gen: int) -> dict:
        if self._vocab_file is None or self._vocab_saved != len(self._vocab):
            name = f"vocab-{gen}.json"
            files.atomic_write_json(folder / name, {"terms": list(self._vocab)})
            self._vocab_file, self._vocab_saved = name, len(self._vocab)
        return {"vocab_file": self._vocab_file}

    def _load_extra(self, folder, manifest: dict) -> None:
        terms = files.read_json(folder / manifest["vocab_file"])["terms"]
        self._vocab = {t: i for i, t in enumerate(terms)}
        self._vocab_file, self._vocab_saved = manifest["vocab_file"], len(terms)

    def _recompute_stats(self) -> None:
        super()._recompute_stats()
        self._grow_df(len(self._vocab))
