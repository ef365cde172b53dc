"""Compressed codes for the first pass of a search (PartitionOptions.quantization).

"sq8": per-dimension scalar quantization to uint8. The quantizer (`SQ8`: lo and step per
dimension) is trained on every row the store is bulk-loaded with (build, load) or, for an
index that starts empty, on the first rows written, and retrained on the rows kept whenever
the arena is compacted (postings.py); rows added in between outside the trained range clip to code 0 / 255, and their larger reconstruction error is part of the per-row
bound `err >= |x - x^|` stored next to the codes, so nothing is lost by clipping, only
first-pass precision.

`QuantizedArena` is an `Arena` (store.py) with those codes as two more per-entry columns: the
same slices, the same offsets, written and moved with the other columns by the arena store
(postings.py), so LIRE and persistence see an ordinary posting store and read full vectors
through the contract. Its search paths (`topk`, `search_one`) score the codes and re-rank
exactly from the full vectors (kernels/sq8.py): results equal an unquantized scan of the
same postings. The exhaustive scan (`scan_all`: widening, filtered search, the scan iterator)
reads full vectors, as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unidb.index.partition.store import Arena
from unidb.kernels import partition as K
from unidb.kernels import sq8 as KQ

QUANTIZATIONS = (None, "sq8")
# Rows encoded per call at build/load: bounds the float64 temporaries to ~dim x 512 kB.
ENCODE_CHUNK = 1 << 16
LEVELS = 255


@dataclass(frozen=True)
class SQ8:
    """x ~ lo + step * code per dimension (float32 lo/step, code in [0, 255])."""
    lo: np.ndarray        # (dim,) float32
    step: np.ndarray      # (dim,) float32, > 0
    lo_norm: float        # |lo|, and |255 step|: the kernels' rounding bounds
    range_norm: float

    @classmethod
    def of(cls, lo: np.ndarray, step: np.ndarray) -> SQ8:
        lo = np.ascontiguousarray(lo, dtype=np.float32)
        step = np.ascontiguousarray(step, dtype=np.float32)
        return cls(lo, step, float(np.linalg.norm(lo.astype(np.float64))),
                   float(np.linalg.norm(LEVELS * step.astype(np.float64))))

    @classmethod
    def untrained(cls, dim: int) -> SQ8:
        """Placeholder of a store that holds no rows yet."""
        return cls.of(np.zeros(dim), np.ones(dim))

    @classmethod
    def train(cls, x: np.ndarray) -> SQ8:
        """Range of every dimension over the rows x. A dimension constant in x gets the
        median step of the others (1 if all are constant), so later rows that vary there
        still get codes finer than clipping."""
        x = np.asarray(x, dtype=np.float32)
        lo = x.min(axis=0).astype(np.float64)
        step = (x.max(axis=0).astype(np.float64) - lo) / LEVELS
        flat = step <= 0
        if flat.any():
            step[flat] = float(np.median(step[~flat])) if (~flat).any() else 1.0
        step = np.maximum(step.astype(np.float32), np.finfo(np.float32).tiny)
        return cls.of(lo, step)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes (n, dim) uint8, reconstruction error bounds (n,) float32)."""
        x = np.asarray(x, dtype=np.float32)
        if len(x) <= ENCODE_CHUNK:
            return KQ.encode(np.ascontiguousarray(x), self.lo, self.step)
        parts = [KQ.encode(np.ascontiguousarray(x[s:s + ENCODE_CHUNK]), self.lo, self.step)
                 for s in range(0, len(x), ENCODE_CHUNK)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@dataclass
class QuantizedArena(Arena):
    """An arena whose entries also carry SQ8 codes and error bounds (module docstring)."""
    codes: np.ndarray    # (cap, dim) uint8
    cerr: np.ndarray     # (cap,) float32: >= |x - x^| of the entry's vector
    sq: SQ8

    def search_codes(self, queries: np.ndarray, qptr: np.ndarray, posts: np.ndarray,
                     mode: int, vmap: np.ndarray, k: int, finish: int) -> tuple:
        """kernels.sq8.search_codes on this arena: query qi probes posts[qptr[qi]:qptr[qi+1]].
        Returns (ids, distances, stored entries scored, entries re-ranked exactly)."""
        sq = self.sq
        return KQ.search_codes(queries, qptr, posts, mode, sq.lo, sq.step, sq.lo_norm,
                               sq.range_norm, self.codes, self.cerr, self.rids, self.vers,
                               vmap, self.packed, self.vecs, k, finish)

    def topk(self, queries, qnorms, mode, vmap, posts, qidx, kk, k):
        o = np.argsort(qidx, kind="stable")
        qptr = np.zeros(len(queries) + 1, dtype=np.int64)
        np.cumsum(np.bincount(qidx, minlength=len(queries)), out=qptr[1:])
        r, d, _, _ = self.search_codes(queries, qptr, np.ascontiguousarray(posts[o]), mode,
                                       vmap, k, KQ.FINISH_NONE)
        return r, d, np.full(len(queries), np.inf)     # exact: no near-tie check needed

    def search_probed(self, q, qn, mode, vmap, posts, kk, k, finish):
        r, d, _, _ = self.search_codes(q[None, :], np.array([0, len(posts)], dtype=np.int64),
                                       posts, mode, vmap, k, finish)
        return r, d, len(posts), np.inf

    def search_one(self, q, mode, nav, vmap, m, eps2, prune, kk, k, finish):
        posts, qn, ok = K.probe_one(q, mode, m, eps2, prune, *nav)
        if not ok:
            return (np.full((1, k), -1, dtype=np.int64), np.full((1, k), np.inf), -1, np.inf)
        return self.search_probed(q, qn, mode, vmap, posts, kk, k, finish)
