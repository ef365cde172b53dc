"""Posting-list kernels for the inverted index (ALGORITHMS.md §4): pure functions on arrays.

One segment's postings are doc-id ordered (local ids, ascending row id) and cut into blocks of
~128 entries; each block keeps its last doc id, the largest value in it (`blk_max`: tf or
weight) and an auxiliary value (`blk_aux`: the smallest doc length for BM25, the smallest
weight for dot products) so that block and term upper bounds stay valid whatever the global
statistics (N, df, avgdl) are at query time — Lucene stores (freq, norm) impacts for the
same reason.

Scoring modes: MODE_BM25 `qw * tf / (tf + k1 * (1 - b + b * dl / avgdl))` with qw = idf * qtf
(Lucene 8+ form, no (k1 + 1) factor); MODE_DOT `qw * value`.

Exactness: every kernel sums a document's per-term contributions in query-term order (an
absent term adds 0.0, which leaves a float unchanged), so the pruned, the exhaustive and the
random-access scorers return bit-identical scores and therefore identical rankings. Pruning
compares bounds with a small slack (`_below`) so rounding can never drop a tied document.
"""
from __future__ import annotations

import numpy as np
from numba import njit

MODE_BM25 = 0
MODE_DOT = 1
# BM25 with each posting's tf / (tf + norm(dl)) read from a cache (fill_bm25_cache) instead of
# computed: contributions are qw * cached value; block bounds still use the BM25 formula.
MODE_BM25_CACHED = 2

# Relative slack when comparing an upper bound with the threshold: bounds are sums in a
# different order than the final score, so they may differ by a few ulps.
_SLACK = 1e-9


@njit(cache=True, inline="always")
def _tf_norm(v, dl, k1, b, avgdl):
    # k1 * (1 - b + b * dl / avgdl) written as k1(1-b) + (k1 b / avgdl) dl: the brackets are
    # loop invariants the compiler hoists, leaving one division per posting
    return v / (v + (k1 * (1.0 - b) + (k1 * b / avgdl) * dl))


@njit(cache=True, inline="always")
def _contrib(mode, qw, v, dl, k1, b, avgdl):
    if mode == 0:
        return qw * _tf_norm(v, dl, k1, b, avgdl)
    return qw * v


@njit(cache=True, inline="always")
def _block_bound(mode, qw, vmax, aux, k1, b, avgdl):
    """Largest contribution any posting of the block can make (never negative)."""
    if mode != 1:
        return qw * _tf_norm(vmax, aux, k1, b, avgdl)
    hi = qw * vmax
    lo = qw * aux
    m = hi if hi > lo else lo
    return m if m > 0.0 else 0.0


@njit(cache=True, inline="always")
def _below(x, theta):
    return x < theta - _SLACK * abs(theta) - 1e-300


@njit(cache=True, inline="always")
def _worse(s1, d1, s2, d2):
    """True when (s1, d1) ranks below (s2, d2): lower score, or equal score and larger id."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(cache=True)
def _sift_down(hs, hd, n, i):
    while True:
        l = 2 * i + 1
        if l >= n:
            return
        m = l
        r = l + 1
        if r < n and _worse(hs[r], hd[r], hs[l], hd[l]):
            m = r
        if _worse(hs[m], hd[m], hs[i], hd[i]):
            hs[i], hs[m] = hs[m], hs[i]
            hd[i], hd[m] = hd[m], hd[i]
            i = m
        else:
            return


@njit(cache=True)
def _sift_up(hs, hd, i):
    while i > 0:
        p = (i - 1) // 2
        if _worse(hs[i], hd[i], hs[p], hd[p]):
            hs[i], hs[p] = hs[p], hs[i]
            hd[i], hd[p] = hd[p], hd[i]
            i = p
        else:
            return


@njit(cache=True)
def term_upper_bounds(tb_start, tb_end, blk_max, blk_aux, qw, mode, k1, b, avgdl):
    """Per query term: the largest block bound over the term's blocks in this segment."""
    nt = qw.shape[0]
    ub = np.zeros(nt)
    for t in range(nt):
        m = 0.0
        for bi in range(tb_start[t], tb_end[t]):
            x = _block_bound(mode, qw[t], blk_max[bi], blk_aux[bi], k1, b, avgdl)
            if x > m:
                m = x
        ub[t] = m
    return ub


@njit(cache=True, inline="always")
def _advance(t, target, pos, bcur, bbv, tp_start, tp_end, tb_start, tb_end, post_doc, blk_last,
             blk_max, blk_aux, qw, mode, k1, b, avgdl, block):
    """Move term t's cursor to its first posting >= target, skipping whole blocks."""
    bi = bcur[t]
    if bi < tb_end[t] and blk_last[bi] < target:
        while bi < tb_end[t] and blk_last[bi] < target:
            bi += 1
        bcur[t] = bi
        bbv[t] = _block_bound(mode, qw[t], blk_max[bi], blk_aux[bi], k1, b, avgdl) \
            if bi < tb_end[t] else 0.0
    if bi >= tb_end[t]:
        pos[t] = tp_end[t]
        return
    # Fixed-size blocks: block bi's postings start at a computable offset.
    lo = tp_start[t] + (bi - tb_start[t]) * block
    if lo < pos[t]:
        lo = pos[t]
    hi = tp_start[t] + (bi - tb_start[t] + 1) * block
    if hi > tp_end[t]:
        hi = tp_end[t]
    while lo < hi:
        mid = (lo + hi) >> 1
        if post_doc[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    pos[t] = lo


@njit(cache=True)
def maxscore_topk(tp_start, tp_end, tb_start, tb_end, post_doc, post_val, blk_last,
                  blk_max, blk_aux, doc_len, allowed, qw, mode, k1, b, avgdl, k, theta0, block):
    """Exact top-k of one segment: MaxScore over essential terms, block-max bounds of all terms
    to skip whole doc ranges, block-max probing of the non-essential terms.

    Returns (local doc ids, scores, number of fully scored docs), best first, ties by smaller
    local id. Only docs scoring >= theta0 are returned (theta0 = k-th score already found in
    other segments, or -inf)."""
    nt = qw.shape[0]
    hs = np.empty(k, np.float64)
    hd = np.empty(k, np.int64)
    hn = 0
    if nt == 0 or k <= 0:
        return hd[:0], hs[:0], 0
    ub = term_upper_bounds(tb_start, tb_end, blk_max, blk_aux, qw, mode, k1, b, avgdl)
    order = np.argsort(ub, kind="mergesort")
    prefix = np.zeros(nt + 1)
    for i in range(nt):
        prefix[i + 1] = prefix[i] + ub[order[i]]
    pos = tp_start.copy()
    bcur = tb_start.copy()
    bbv = np.zeros(nt)            # bound of each term's current block
    for t in range(nt):
        if tb_start[t] < tb_end[t]:
            bi = tb_start[t]
            bbv[t] = _block_bound(mode, qw[t], blk_max[bi], blk_aux[bi], k1, b, avgdl)
    contrib = np.zeros(nt)
    theta = theta0
    # Terms order[0:e] are non-essential: together they cannot reach theta.
    e = 0
    while e < nt and _below(prefix[e + 1], theta):
        e += 1
    big = np.int64(1) << 62
    scored = 0
    while e < nt:
        d = big
        for i in range(e, nt):
            t = order[i]
            if pos[t] < tp_end[t]:
                x = np.int64(post_doc[pos[t]])
                if x < d:
                    d = x
        if d == big:
            break
        # Block-max bound of d over all terms; it holds for every doc up to `upto`.
        bsum = 0.0
        upto = big
        for t in range(nt):
            bi = bcur[t]
            if bi < tb_end[t] and blk_last[bi] < d:
                while bi < tb_end[t] and blk_last[bi] < d:
                    bi += 1
                bcur[t] = bi
                bbv[t] = _block_bound(mode, qw[t], blk_max[bi], blk_aux[bi], k1, b, avgdl) \
                    if bi < tb_end[t] else 0.0
            if bi < tb_end[t]:
                bsum += bbv[t]
                last = np.int64(blk_last[bi])
                if last < upto:
                    upto = last
        if _below(bsum, theta) or allowed[d] == 0:
            target = upto + 1 if _below(bsum, theta) else d + 1
            for i in range(e, nt):
                _advance(order[i], target, pos, bcur, bbv, tp_start, tp_end, tb_start, tb_end,
                         post_doc, blk_last, blk_max, blk_aux, qw, mode, k1, b, avgdl, block)
            continue
        dl = doc_len[d]
        partial = 0.0
        rem = 0.0
        for i in range(e, nt):
            t = order[i]
            p = pos[t]
            if p < tp_end[t] and post_doc[p] == d:
                c = _contrib(mode, qw[t], post_val[p], dl, k1, b, avgdl)
                contrib[t] = c
                partial += c
                pos[t] = p + 1
        for i in range(e):
            rem += bbv[order[i]]
        ok = True
        if _below(partial + rem, theta):
            ok = False
        else:
            for i in range(e - 1, -1, -1):
                t = order[i]
                rem -= bbv[t]
                if bcur[t] < tb_end[t]:
                    _advance(t, d, pos, bcur, bbv, tp_start, tp_end, tb_start, tb_end,
                             post_doc, blk_last, blk_max, blk_aux, qw, mode, k1, b, avgdl, block)
                    p = pos[t]
                    if p < tp_end[t] and post_doc[p] == d:
                        c = _contrib(mode, qw[t], post_val[p], dl, k1, b, avgdl)
                        contrib[t] = c
                        partial += c
                if _below(partial + rem, theta):
                    ok = False
                    break
        if ok:
            s = 0.0
            for t in range(nt):
                s += contrib[t]
            scored += 1
            if hn < k:
                if s >= theta0:
                    hs[hn] = s
                    hd[hn] = d
                    _sift_up(hs, hd, hn)
                    hn += 1
                    if hn == k:
                        theta = hs[0] if hs[0] > theta0 else theta0
            elif _worse(hs[0], hd[0], s, d):
                hs[0] = s
                hd[0] = d
                _sift_down(hs, hd, hn, 0)
                theta = hs[0] if hs[0] > theta0 else theta0
            while e < nt and _below(prefix[e + 1], theta):
                e += 1
        for t in range(nt):
            contrib[t] = 0.0
    # Sort the heap best first.
    out_s = hs[:hn].copy()
    out_d = hd[:hn].copy()
    idx = np.arange(hn)
    for i in range(1, hn):
        j = i
        while j > 0 and _worse(out_s[idx[j - 1]], out_d[idx[j - 1]], out_s[idx[j]], out_d[idx[j]]):
            idx[j - 1], idx[j] = idx[j], idx[j - 1]
            j -= 1
    return out_d[idx], out_s[idx], scored


@njit(cache=True)
def exhaustive_scores(tp_start, tp_end, post_doc, post_val, doc_len, allowed, qw, mode, k1, b,
                      avgdl, n_docs):
    """Term-at-a-time scores of every allowed doc matching at least one term.

    Returns (local doc ids ascending, scores)."""
    acc = np.zeros(n_docs)
    hit = np.zeros(n_docs, np.uint8)
    nt = qw.shape[0]
    for t in range(nt):
        for p in range(tp_start[t], tp_end[t]):
            d = post_doc[p]
            if allowed[d] != 0:
                acc[d] += _contrib(mode, qw[t], post_val[p], doc_len[d], k1, b, avgdl)
                hit[d] = 1
    n = 0
    for d in range(n_docs):
        if hit[d]:
            n += 1
    ids = np.empty(n, np.int64)
    sc = np.empty(n)
    j = 0
    for d in range(n_docs):
        if hit[d]:
            ids[j] = d
            sc[j] = acc[d]
            j += 1
    return ids, sc


@njit(cache=True)
def random_access_scores(docs, tp_start, tp_end, post_doc, post_val, doc_len, qw, mode, k1, b,
                         avgdl):
    """Scores of the given local docs by binary search in each term's postings.

    Returns (scores, matched) where matched[i] says doc i contains at least one term."""
    n = docs.shape[0]
    nt = qw.shape[0]
    out = np.zeros(n)
    matched = np.zeros(n, np.bool_)
    for i in range(n):
        d = docs[i]
        s = 0.0
        for t in range(nt):
            lo = tp_start[t]
            hi = tp_end[t]
            while lo < hi:
                mid = (lo + hi) >> 1
                if post_doc[mid] < d:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < tp_end[t] and post_doc[lo] == d:
                s += _contrib(mode, qw[t], post_val[lo], doc_len[d], k1, b, avgdl)
                matched[i] = True
            else:
                s += 0.0
        out[i] = s
    return out, matched


@njit(cache=True)
def exhaustive_topk(tp_start, tp_end, post_doc, post_val, doc_len, allowed, qw, mode, k1, b,
                    avgdl, n_docs, k, theta0):
    """Top-k by term-at-a-time accumulation (same scores as `exhaustive_scores`): cheaper than
    MaxScore when the query's postings are few next to the segment (no per-doc merge)."""
    acc = np.zeros(n_docs)
    # BM25 contributions are > 0 (idf > 0, tf >= 1), so acc > 0 marks a match and the hit
    # array (one more store per posting) is needed for dot products only.
    track = mode == 1
    hit = np.zeros(n_docs if track else 0, np.uint8)
    nt = qw.shape[0]
    for t in range(nt):
        for p in range(tp_start[t], tp_end[t]):
            d = post_doc[p]
            if allowed[d] != 0:
                acc[d] += _contrib(mode, qw[t], post_val[p], doc_len[d], k1, b, avgdl)
                if track:
                    hit[d] = 1
    hs = np.empty(max(k, 1), np.float64)
    hd = np.empty(max(k, 1), np.int64)
    hn = 0
    for d in range(n_docs):
        if (hit[d] == 0) if track else (acc[d] <= 0.0):
            continue
        s = acc[d]
        if hn < k:
            if s >= theta0:
                hs[hn] = s
                hd[hn] = d
                _sift_up(hs, hd, hn)
                hn += 1
        elif _worse(hs[0], hd[0], s, d):
            hs[0] = s
            hd[0] = d
            _sift_down(hs, hd, hn, 0)
    out_s = np.empty(hn)
    out_d = np.empty(hn, np.int64)
    # Pop the heap (worst first) into the output from the back: best first.
    n = hn
    while n > 0:
        out_s[n - 1] = hs[0]
        out_d[n - 1] = hd[0]
        n -= 1
        hs[0] = hs[n]
        hd[0] = hd[n]
        _sift_down(hs, hd, n, 0)
    return out_d, out_s


@njit(cache=True)
def count_ahead(scores, rows, q_scores, q_rows):
    """For each query entry, how many list entries rank ahead of it (score desc, row asc).

    One branch-free pass over the list per query: the compiler vectorises it, which measured
    several times faster than one pass with a binary search per entry."""
    m = q_scores.shape[0]
    out = np.zeros(m, np.int64)
    n = scores.shape[0]
    for q in range(m):
        s = q_scores[q]
        r = q_rows[q]
        c = 0
        for x in range(n):
            c += (scores[x] > s) | ((scores[x] == s) & (rows[x] < r))
        out[q] = c
    return out


@njit(cache=True)
def top_ranked(rows, scores, lo, hi, n):
    """Positions (lo..hi) of the n best entries (score desc, row asc), best first (heap)."""
    n = min(n, hi - lo)
    hs = np.empty(max(n, 1), np.float64)
    hd = np.empty(max(n, 1), np.int64)     # row ids
    hp = np.empty(max(n, 1), np.int64)     # positions
    cnt = 0
    for x in range(lo, hi):
        s = scores[x]
        r = rows[x]
        if cnt < n:
            hs[cnt] = s
            hd[cnt] = r
            hp[cnt] = x
            i = cnt
            cnt += 1
            while i > 0:
                p = (i - 1) // 2
                if _worse(hs[i], hd[i], hs[p], hd[p]):
                    hs[i], hs[p] = hs[p], hs[i]
                    hd[i], hd[p] = hd[p], hd[i]
                    hp[i], hp[p] = hp[p], hp[i]
                    i = p
                else:
                    break
        elif _worse(hs[0], hd[0], s, r):
            hs[0] = s
            hd[0] = r
            hp[0] = x
            i = 0
            while True:
                c = 2 * i + 1
                if c >= n:
                    break
                if c + 1 < n and _worse(hs[c + 1], hd[c + 1], hs[c], hd[c]):
                    c += 1
                if _worse(hs[c], hd[c], hs[i], hd[i]):
                    hs[i], hs[c] = hs[c], hs[i]
                    hd[i], hd[c] = hd[c], hd[i]
                    hp[i], hp[c] = hp[c], hp[i]
                    i = c
                else:
                    break
    # pop worst-first into the back of the output
    out = np.empty(cnt, np.int64)
    m = cnt
    while m > 0:
        out[m - 1] = hp[0]
        m -= 1
        hs[0] = hs[m]
        hd[0] = hd[m]
        hp[0] = hp[m]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= m:
                break
            if c + 1 < m and _worse(hs[c + 1], hd[c + 1], hs[c], hd[c]):
                c += 1
            if _worse(hs[c], hd[c], hs[i], hd[i]):
                hs[i], hs[c] = hs[c], hs[i]
                hd[i], hd[c] = hd[c], hd[i]
                hp[i], hp[c] = hp[c], hp[i]
                i = c
            else:
                break
    return out


@njit(cache=True)
def rrf_exact_full(rows, scores, perm, offs, k, limit, first, settle_n):
    """Exact RRF over S full lists held in memory (concatenated; list i is offs[i]:offs[i+1],
    perm[offs[i]:offs[i+1]] sorts it by row id). Same method as fusion.exact_fused_topk:
    top-D per list, settle the ranks of the most promising partial rows by counting, stop when
    the limit-th fused score beats every bound, else D *= 4.

    Returns (rows, fused, depth, rounds); fused values equal fusion._rrf_values bit for bit."""
    S = offs.shape[0] - 1
    depth = max(first, limit)
    rounds = 0
    while True:
        rounds += 1
        tops = []
        total = 0
        for i in range(S):
            t = top_ranked(rows, scores, offs[i], offs[i + 1], depth)
            tops.append(t)
            total += t.shape[0]
        cand = np.empty(total, np.int64)
        j = 0
        for i in range(S):
            for p in tops[i]:
                cand[j] = rows[p]
                j += 1
        cand = np.unique(cand)
        nc = cand.shape[0]
        ranks = np.zeros((S, nc), np.int64)
        unknown = np.zeros((S, nc), np.bool_)
        where = np.full((S, nc), -1, np.int64)   # position of a candidate in list i
        tail = np.zeros(S)
        for i in range(S):
            t = tops[i]
            for q in range(t.shape[0]):
                x = rows[t[q]]
                a, z = 0, nc
                while a < z:
                    mid = (a + z) >> 1
                    if cand[mid] < x:
                        a = mid + 1
                    else:
                        z = mid
                ranks[i, a] = q + 1
            if t.shape[0] < offs[i + 1] - offs[i]:
                tail[i] = 1.0 / (k + depth + 1)
                # merge-join the sorted candidates with the list in row order: O(N + nc)
                lo = offs[i]
                n_i = offs[i + 1] - lo
                a = 0
                for c in range(nc):
                    while a < n_i and rows[lo + perm[lo + a]] < cand[c]:
                        a += 1
                    if a < n_i and rows[lo + perm[lo + a]] == cand[c]:
                        where[i, c] = lo + perm[lo + a]
                        if ranks[i, c] == 0:
                            unknown[i, c] = True
        fused = np.zeros(nc)
        ub = np.zeros(nc)
        partial = np.zeros(nc, np.bool_)
        for c in range(nc):
            f = 0.0
            u = 0.0
            for i in range(S):
                if ranks[i, c] > 0:
                    f += 1.0 / (k + ranks[i, c])
                else:
                    f += 0.0
                if unknown[i, c]:
                    u += tail[i]
                    partial[c] = True
            fused[c] = f
            ub[c] = f + u
        # settle the most promising partial rows' ranks by counting
        pidx = np.flatnonzero(partial)
        if pidx.shape[0] > 0:
            # only rows that could still beat the current limit-th known row need settling
            kn = np.flatnonzero(~partial)
            if kn.shape[0] >= limit:
                kpos = top_ranked(cand[kn], fused[kn], 0, kn.shape[0], limit)
                bar = fused[kn[kpos[limit - 1]]]
                pidx = pidx[ub[pidx] >= bar]
            order = np.argsort(-ub[pidx], kind="mergesort")[:settle_n]
            sel = pidx[order]
            for i in range(S):
                m = 0
                for c in sel:
                    if unknown[i, c]:
                        m += 1
                if m == 0:
                    continue
                qs = np.empty(m)
                qr = np.empty(m, np.int64)
                qc = np.empty(m, np.int64)
                m = 0
                for c in sel:
                    if unknown[i, c]:
                        qc[m] = c
                        qr[m] = cand[c]
                        qs[m] = scores[where[i, c]]
                        m += 1
                ahead = count_ahead(scores[offs[i]:offs[i + 1]], rows[offs[i]:offs[i + 1]], qs, qr)
                for q in range(m):
                    ranks[i, qc[q]] = ahead[q] + 1
                    unknown[i, qc[q]] = False
            for c in range(nc):
                f = 0.0
                u = 0.0
                partial[c] = False
                for i in range(S):
                    if ranks[i, c] > 0:
                        f += 1.0 / (k + ranks[i, c])
                    else:
                        f += 0.0
                    if unknown[i, c]:
                        u += tail[i]
                        partial[c] = True
                fused[c] = f
                ub[c] = f + u
        # top-limit among fully known rows
        kn = np.flatnonzero(~partial)
        kpos = top_ranked(cand[kn], fused[kn], 0, kn.shape[0], limit)
        top_rows = cand[kn][kpos]
        top_f = fused[kn][kpos]
        done = True
        for i in range(S):
            if tail[i] > 0.0:
                done = False
        if not done and top_rows.shape[0] >= limit:
            other = 0.0
            for i in range(S):
                other += tail[i]
            for c in range(nc):
                if partial[c] and ub[c] > other:
                    other = ub[c]
            done = top_f[top_f.shape[0] - 1] > other
        if done:
            return top_rows, top_f, depth, rounds
        depth *= 4


@njit(cache=True)
def lookup_terms(seg_terms, term_ptr, term_blk, q_terms):
    """Posting and block ranges of each query term in a segment (empty when absent)."""
    n = q_terms.shape[0]
    tp_s = np.zeros(n, np.int64)
    tp_e = np.zeros(n, np.int64)
    tb_s = np.zeros(n, np.int64)
    tb_e = np.zeros(n, np.int64)
    local = np.full(n, -1, np.int64)
    m = seg_terms.shape[0]
    for j in range(n):
        t = q_terms[j]
        lo, hi = 0, m
        while lo < hi:
            mid = (lo + hi) >> 1
            if seg_terms[mid] < t:
                lo = mid + 1
            else:
                hi = mid
        if lo < m and seg_terms[lo] == t:
            tp_s[j] = term_ptr[lo]
            tp_e[j] = term_ptr[lo + 1]
            tb_s[j] = term_blk[lo]
            tb_e[j] = term_blk[lo + 1]
            local[j] = lo
    return tp_s, tp_e, tb_s, tb_e, local


@njit(cache=True)
def fill_bm25_cache(tp_start, tp_end, local_terms, post_doc, post_val, doc_len, k1, b, avgdl,
                    version, cache, cache_ver):
    """Compute tf / (tf + norm(dl)) for the postings of the query terms whose cached values
    are from another statistics version (lazily, per term: a write invalidates everything,
    but only terms that are queried again pay to recompute)."""
    for j in range(local_terms.shape[0]):
        t = local_terms[j]
        if t < 0 or cache_ver[t] == version:
            continue
        for p in range(tp_start[j], tp_end[j]):
            cache[p] = _tf_norm(post_val[p], doc_len[post_doc[p]], k1, b, avgdl)
        cache_ver[t] = version


@njit(cache=True)
def score_moments(scores):
    """(min, max, mean, std) of a score list in one compiled pass (plus one for the variance);
    sequential sums, so every caller on the same array gets the same bits."""
    n = scores.shape[0]
    lo = np.inf
    hi = -np.inf
    total = 0.0
    for x in range(n):
        v = scores[x]
        total += v
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    mean = total / n
    ss = 0.0
    for x in range(n):
        dv = scores[x] - mean
        ss += dv * dv
    return lo, hi, mean, np.sqrt(ss / n)
