"""Which first-pass codes can keep search exact: per-row error bounds of SQ8 vs 1-bit codes.

For each code, a row's true distance lies in |q - x^| +- err (err = |x - x^|); a row must be
re-ranked from its full vector when its lower bound is at or below the k-th smallest upper
bound. This prints the fraction of *all* rows (no partitions: the worst case) that must be
re-ranked for 50 queries, k = 10. 1-bit codes: centred signs with the per-row scale that
minimises |x - x^| (x^ = mean + mean|x - mean| * sign(x - mean)), RaBitQ's code without its
random rotation and probabilistic (not deterministic) bounds.

    .venv/bin/python bench/code_bounds.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.configure_threads(1)

import numpy as np

from unidb import datasets
from unidb.index.partition.quantize import SQ8

K = 10
QUERIES = 50


def rerank_fraction(rec: np.ndarray, err: np.ndarray, queries: np.ndarray) -> float:
    out = []
    for q in queries:
        ad = np.linalg.norm(rec - q, axis=1)
        out.append(float(((ad - err) <= np.sort(ad + err)[K - 1]).mean()))
    return float(np.mean(out))


def main():
    rows = []
    for name, load in (("siftsmall", datasets.load_siftsmall), ("mnist", datasets.load_mnist)):
        d = load()
        x = d.base.astype(np.float32)
        q = d.queries[:QUERIES].astype(np.float64)
        sq = SQ8.train(x)
        codes, err = sq.encode(x)
        rec = sq.lo.astype(np.float64) + sq.step.astype(np.float64) * codes
        mu = x.mean(axis=0)
        r = x - mu
        rec_b = mu + np.abs(r).mean(axis=1, keepdims=True) * np.where(r >= 0, 1.0, -1.0)
        err_b = np.linalg.norm(x - rec_b, axis=1)
        for code, rc, er, nbytes in (("sq8", rec, err, x.shape[1] + 4),
                                     ("1-bit", rec_b, err_b, x.shape[1] // 8 + 4)):
            rows.append({"dataset": name, "code": code, "bytes/vector": nbytes,
                         "median err": float(np.median(er)),
                         "re-ranked (all rows)": rerank_fraction(rc, er, q)})
    _common.print_table(rows, ["dataset", "code", "bytes/vector", "median err",
                               "re-ranked (all rows)"],
                        title="deterministic bounds: fraction of rows to re-rank, k=10")
    print(f"wrote {_common.write_results('code-bounds', {'rows': rows})}")


if __name__ == "__main__":
    main()
