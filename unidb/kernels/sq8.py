"""SQ8 first-pass kernels of the partition index: score uint8 codes, re-rank exactly.

A vector x is stored with per-dimension codes c (x ~ x^ = lo + step * c, the quantizer's
float32 lo/step read as exact reals) and a bound err >= |x - x^| (computed in float64 when the
row is written, rounded up). The scan scores the codes in float32 against a float query and
turns each score into a lower and an upper bound of the row's true distance:

* L2 (and cosine on unit vectors): | |q - x| - |q - x^| | <= err (triangle inequality);
* IP: | q.x - q.x^ | <= |q| err (Cauchy-Schwarz);

each widened by a bound on the float32 rounding of the code score itself (SLACK_ULPS). The
k-th smallest upper bound among distinct rows is >= the exact k-th distance, so every row
whose lower bound is above it can be skipped, and every row of the exact top-k is re-ranked
from its full float32 vector in float64: the result equals an exact pass over the same
postings, sorted by (distance, row id). Validity (`vmap[row] == version`) as in
kernels/partition.py.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from unidb.kernels.partition import MODE_L2, _dot_u8, _exact, _heap_push, _unpack

# Float32 rounding of a code score over dim terms: |error| <= (dim + SLACK_ULPS) * eps32 *
# (|q - lo| + |range|)^2 for L2, (dim + SLACK_ULPS) * eps32 * |q| (|lo| + |range|) for IP
# (each term's products and differences round by a few ulps of the operands, the sum by dim
# ulps of the sum of magnitudes; |x^ - lo| <= |range| = |255 step|). The same form as
# index.py's SCAN_ERR_ULPS, with more margin for the extra products.
SLACK_ULPS = 8
EPS32 = np.float64(np.finfo(np.float32).eps)
FINISH_NONE = 2                     # `finish` code: scores as computed (squared L2 / -dot)


@nb.njit(cache=True, fastmath=True, inline="always")
def _code_l2(qd, step, codes, i):
    s = np.float32(0.0)
    for j in range(qd.shape[0]):
        t = qd[j] - step[j] * np.float32(codes[i, j])
        s += t * t
    return s


@nb.njit(cache=True, fastmath=True, nogil=True)
def search_codes(queries, qptr, posts, mode, lo, step, lo_norm, range_norm, codes, cerr,
                 rids, vers, vmap, packed, vecs, k, finish):
    """Top-k of each query qi over postings posts[qptr[qi]:qptr[qi+1]]: code scan with
    distance bounds, exact float64 re-rank of every row that can be in the top-k.

    Returns (row ids (nq, k) -1 padded, distances (nq, k) +inf padded, sorted by (distance,
    row id) and finished as `kernels.partition.search_one` finishes them (`finish`), stored
    entries scored per query, entries re-ranked exactly per query)."""
    nq, dim = queries.shape
    out_r = np.full((nq, k), -1, dtype=np.int64)
    out_d = np.full((nq, k), np.inf, dtype=np.float64)
    scored = np.zeros(nq, dtype=np.int64)
    reranked = np.zeros(nq, dtype=np.int64)
    nv = vmap.shape[0]
    most = 0
    for qi in range(nq):
        tot = 0
        for t in range(qptr[qi], qptr[qi + 1]):
            tot += _unpack(packed[posts[t]])[1]
        most = max(most, tot)
    cpos = np.empty(most, dtype=np.int64)
    clow = np.empty(most, dtype=np.float64)
    dd = np.empty(most, dtype=np.float64)
    rr = np.empty(most, dtype=np.int64)
    hd = np.empty(k, dtype=np.float64)
    hr = np.empty(k, dtype=np.int64)
    hp = np.empty(k, dtype=np.int64)
    qd = np.empty(dim, dtype=np.float32)
    for qi in range(nq):
        q = queries[qi]
        qlo = 0.0
        qn2 = 0.0
        if mode == MODE_L2:
            for j in range(dim):
                qd[j] = q[j] - lo[j]
                qn2 += np.float64(qd[j]) * np.float64(qd[j])
            slack = (dim + SLACK_ULPS) * EPS32 * (np.sqrt(qn2) + range_norm) ** 2
        else:
            for j in range(dim):
                qd[j] = q[j] * step[j]
                qlo += np.float64(q[j]) * np.float64(lo[j])
                qn2 += np.float64(q[j]) * np.float64(q[j])
            slack = (dim + SLACK_ULPS) * EPS32 * np.sqrt(qn2) * (lo_norm + range_norm)
        qnorm = np.sqrt(qn2)
        size = 0
        nc = 0
        thr = np.inf
        ns = 0
        for t in range(qptr[qi], qptr[qi + 1]):
            off, ln = _unpack(packed[posts[t]])
            ns += ln
            for i in range(off, off + ln):
                if mode == MODE_L2:
                    a = np.float64(_code_l2(qd, step, codes, i))
                    low = np.sqrt(max(a - slack, 0.0)) - cerr[i]
                    if low > thr:
                        continue
                    up = np.sqrt(a + slack) + cerr[i]
                else:
                    a = -(qlo + np.float64(_dot_u8(qd, codes, i)))
                    e = slack + qnorm * cerr[i]
                    low = a - e
                    if low > thr:
                        continue
                    up = a + e
                rid = rids[i]
                if rid >= nv or vmap[rid] != vers[i]:
                    continue
                cpos[nc] = i
                clow[nc] = low
                nc += 1
                size = _heap_push(hd, hr, hp, size, up, rid, i)
                if size == k:
                    thr = hd[0]
        m = 0
        for c in range(nc):
            if clow[c] <= thr:
                dd[m] = _exact(mode, q, vecs, cpos[c])
                rr[m] = rids[cpos[c]]
                m += 1
        scored[qi] = ns
        reranked[qi] = m
        o = np.argsort(dd[:m])
        sd = dd[:m][o]
        sr = rr[:m][o]
        # ties in distance sorted by row id (insertion sort: only tied runs move)
        for a in range(1, m):
            d0 = sd[a]
            r0 = sr[a]
            b = a - 1
            while b >= 0 and sd[b] == d0 and sr[b] > r0:
                sd[b + 1] = sd[b]
                sr[b + 1] = sr[b]
                b -= 1
            sd[b + 1] = d0
            sr[b + 1] = r0
        got = 0
        for a in range(m):
            if got == k:
                break
            if got > 0 and out_r[qi, got - 1] == sr[a]:
                continue        # a replica: same stored vector, same distance, adjacent
            d = sd[a]
            if finish == 0:
                d = np.sqrt(max(d, 0.0))
            elif finish == 1:
                d = d / 2.0
            out_r[qi, got] = sr[a]
            out_d[qi, got] = d
            got += 1
    return out_r, out_d, scored, reranked


@nb.njit(cache=True, nogil=True)
def encode(x, lo, step):
    """(codes (n, dim) uint8, err (n,) float32): per-dimension rounding to [0, 255] (values
    outside the trained range clip) and an upper bound of |x - x^| computed in float64."""
    n, dim = x.shape
    codes = np.empty((n, dim), dtype=np.uint8)
    err = np.empty(n, dtype=np.float32)
    for i in range(n):
        s = 0.0
        for j in range(dim):
            st = np.float64(step[j])
            c = np.rint((np.float64(x[i, j]) - np.float64(lo[j])) / st)
            c = min(max(c, 0.0), 255.0)
            codes[i, j] = np.uint8(c)
            t = np.float64(x[i, j]) - (np.float64(lo[j]) + st * c)
            s += t * t
        # float64 rounding of s is ~dim ulps; the relative margin covers it many times over
        e = np.float32(np.sqrt(s) * (1.0 + 1e-9))
        err[i] = np.nextafter(e, np.float32(np.inf))
    return codes, err
