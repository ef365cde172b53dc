"""Posting-scan kernels of the partition index: pure functions on arrays (numba, cache=True).

Layout shared with `unidb.index.partition.postings`: every posting is a contiguous slice of
one arena (vectors float32 (cap, dim), squared norms float32, row ids int64, versions uint8).
`packed[p] = offset << LEN_BITS | length` publishes a posting's live prefix in one 8-byte word,
so a reader never sees a new offset with an old length or the reverse.

An entry is valid when `vmap[row] == version` (the version map byte: 7-bit version, bit 7 =
deleted; entry versions never have bit 7 set, so deleted rows never match).

Scoring modes: MODE_L2 scores `|x|^2 - 2 x.q + |q|^2` (squared L2, also used for cosine on
unit vectors); MODE_IP scores `-x.q`. Fast scans run in float32 and keep a few extra
candidates; `rerank_exact` re-scores them in float64 so near ties come out in exact order.
"""
from __future__ import annotations

import numba as nb
import numpy as np

LEN_BITS = 24                      # posting length field of `packed`: up to 16M entries
LEN_MASK = (1 << LEN_BITS) - 1
MODE_L2 = 0
MODE_IP = 1


@nb.njit(cache=True, inline="always")
def _unpack(word):
    return word >> LEN_BITS, word & LEN_MASK


@nb.njit(cache=True, fastmath=True, inline="always")
def _dot32(q, vecs, i):
    s = np.float32(0.0)
    for j in range(q.shape[0]):
        s += q[j] * vecs[i, j]
    return s


@nb.njit(cache=True, inline="always")
def _heap_sift_down(hd, hr, hp, size):
    # max-heap on distance, root at 0
    i = 0
    while True:
        l = 2 * i + 1
        if l >= size:
            break
        r = l + 1
        m = l
        if r < size and hd[r] > hd[l]:
            m = r
        if hd[m] > hd[i]:
            hd[i], hd[m] = hd[m], hd[i]
            hr[i], hr[m] = hr[m], hr[i]
            hp[i], hp[m] = hp[m], hp[i]
            i = m
        else:
            break


@nb.njit(cache=True, inline="always")
def _heap_push(hd, hr, hp, size, d, rid, pos):
    """Push into a fixed-capacity max-heap keeping the smallest; dedup by row id. Returns size."""
    cap = hd.shape[0]
    if size == cap and d >= hd[0]:
        return size
    for t in range(size):
        if hr[t] == rid:           # replica of a row already held (same stored vector)
            return size
    if size < cap:
        i = size
        hd[i] = d
        hr[i] = rid
        hp[i] = pos
        while i > 0:
            par = (i - 1) // 2
            if hd[par] < hd[i]:
                hd[i], hd[par] = hd[par], hd[i]
                hr[i], hr[par] = hr[par], hr[i]
                hp[i], hp[par] = hp[par], hp[i]
                i = par
            else:
                break
        return size + 1
    hd[0] = d
    hr[0] = rid
    hp[0] = pos
    _heap_sift_down(hd, hr, hp, size)
    return size


@nb.njit(cache=True, fastmath=True)
def scan_topk_grouped(queries, qnorms, mode, vecs, sqn, rids, vers, vmap, packed,
                      pair_post, pair_query, kk):
    """Top-kk valid, distinct rows per query over (query, posting) pairs sorted by posting.

    Each posting is read once for all queries probing it. Returns heap arrays (nq, kk):
    approximate distances (float32, +inf padded), row ids (-1 padded), arena positions.
    """
    nq = queries.shape[0]
    hd = np.full((nq, kk), np.inf, dtype=np.float32)
    hr = np.full((nq, kk), -1, dtype=np.int64)
    hp = np.full((nq, kk), -1, dtype=np.int64)
    sizes = np.zeros(nq, dtype=np.int64)
    nv = vmap.shape[0]
    for t in range(pair_post.shape[0]):
        p = pair_post[t]
        qi = pair_query[t]
        off, ln = _unpack(packed[p])
        q = queries[qi]
        qn = qnorms[qi]
        hdq = hd[qi]
        hrq = hr[qi]
        hpq = hp[qi]
        size = sizes[qi]
        for i in range(off, off + ln):
            s = _dot32(q, vecs, i)
            if mode == MODE_L2:
                d = qn + sqn[i] - np.float32(2.0) * s
            else:
                d = -s
            if size == kk and d >= hdq[0]:
                continue
            rid = rids[i]
            if rid >= nv or vmap[rid] != vers[i]:
                continue
            size = _heap_push(hdq, hrq, hpq, size, d, rid, i)
        sizes[qi] = size
    return hd, hr, hp


@nb.njit(cache=True, fastmath=True)
def _exact(mode, q, vecs, i):
    s = 0.0
    if mode == MODE_L2:
        for j in range(q.shape[0]):
            t = np.float64(vecs[i, j]) - np.float64(q[j])
            s += t * t
    else:
        for j in range(q.shape[0]):
            s -= np.float64(vecs[i, j]) * np.float64(q[j])
    return s


@nb.njit(cache=True, fastmath=True)
def rerank_exact(queries, mode, vecs, hr, hp, k):
    """Re-score heap entries exactly (float64) and return the k best per query, sorted by
    (distance, row id). Distances are squared L2 (MODE_L2) or -dot (MODE_IP)."""
    nq, kk = hr.shape
    out_r = np.full((nq, k), -1, dtype=np.int64)
    out_d = np.full((nq, k), np.inf, dtype=np.float64)
    dd = np.empty(kk, dtype=np.float64)
    rr = np.empty(kk, dtype=np.int64)
    for qi in range(nq):
        m = 0
        for t in range(kk):
            if hr[qi, t] >= 0:
                dd[m] = _exact(mode, queries[qi], vecs, hp[qi, t])
                rr[m] = hr[qi, t]
                m += 1
        # insertion sort on (distance, row id): kk is small
        for a in range(1, m):
            d0 = dd[a]
            r0 = rr[a]
            b = a - 1
            while b >= 0 and (dd[b] > d0 or (dd[b] == d0 and rr[b] > r0)):
                dd[b + 1] = dd[b]
                rr[b + 1] = rr[b]
                b -= 1
            dd[b + 1] = d0
            rr[b + 1] = r0
        for a in range(min(m, k)):
            out_r[qi, a] = rr[a]
            out_d[qi, a] = dd[a]
    return out_r, out_d


@nb.njit(cache=True)
def scan_all(q, mode, vecs, rids, vers, vmap, packed, posts):
    """Every valid entry of the given postings with its exact float64 distance (squared L2
    or -dot), in posting order. Replicas are not deduplicated here."""
    total = 0
    for t in range(posts.shape[0]):
        off, ln = _unpack(packed[posts[t]])
        total += ln
    out_r = np.empty(total, dtype=np.int64)
    out_d = np.empty(total, dtype=np.float64)
    nv = vmap.shape[0]
    m = 0
    for t in range(posts.shape[0]):
        off, ln = _unpack(packed[posts[t]])
        for i in range(off, off + ln):
            rid = rids[i]
            if rid >= nv or vmap[rid] != vers[i]:
                continue
            out_r[m] = rid
            out_d[m] = _exact(mode, q, vecs, i)
            m += 1
    return out_r[:m], out_d[:m]


@nb.njit(cache=True)
def valid_positions(rids, vers, vmap, packed, posts):
    """Arena positions of the valid entries of the given postings, in posting order."""
    total = 0
    for t in range(posts.shape[0]):
        off, ln = _unpack(packed[posts[t]])
        total += ln
    out = np.empty(total, dtype=np.int64)
    nv = vmap.shape[0]
    m = 0
    for t in range(posts.shape[0]):
        off, ln = _unpack(packed[posts[t]])
        for i in range(off, off + ln):
            rid = rids[i]
            if rid < nv and vmap[rid] == vers[i]:
                out[m] = i
                m += 1
    return out[:m]


@nb.njit(cache=True)
def rng_replicas(cand_ids, cand_dist, centroids, eps1, max_replicas):
    """Boundary replication with SPANN's RNG rule (ALGORITHMS.md §2).

    cand_ids/cand_dist (n, c): each row's nearest centroids, nearest first, true distances.
    Centroid j is kept if dist(x,c_j) <= (1+eps1) dist(x,c_1), unless an already chosen c_s
    has dist(c_j, c_s) < dist(x, c_j). Returns (n, max_replicas) centroid ids, -1 padded.
    """
    n, c = cand_ids.shape
    dim = centroids.shape[1]
    out = np.full((n, max_replicas), -1, dtype=np.int64)
    for i in range(n):
        out[i, 0] = cand_ids[i, 0]
        m = 1
        limit = (1.0 + eps1) * cand_dist[i, 0]
        for t in range(1, c):
            if m >= max_replicas:
                break
            j = cand_ids[i, t]
            if j < 0:
                break
            dj = cand_dist[i, t]
            if dj > limit:
                break
            ok = True
            for s in range(m):
                cs = out[i, s]
                acc = 0.0
                for u in range(dim):
                    e = np.float64(centroids[j, u]) - np.float64(centroids[cs, u])
                    acc += e * e
                if np.sqrt(acc) < dj:
                    ok = False
                    break
            if ok:
                out[i, m] = j
                m += 1
    return out


@nb.njit(cache=True, fastmath=True)
def _select_ranges(q, qn, mode, vecs, norms, ids, starts, ends, m, eps2, prune):
    """The m nearest of the rows vecs[starts[r]:ends[r]] (their slot ids in `ids`), nearest
    first by (distance, slot). Rows are read sequentially (the caller lays candidates out
    contiguously). Cut by the eps2 rule on squared L2 when `prune`."""
    mm = max(m, 1)
    hd = np.full(mm, np.inf, dtype=np.float32)
    hr = np.full(mm, -1, dtype=np.int64)
    hp = np.zeros(mm, dtype=np.int64)
    size = 0
    for r in range(starts.shape[0]):
        for t in range(starts[r], ends[r]):
            s = _dot32(q, vecs, t)
            if mode == MODE_L2:
                d = qn + norms[t] - np.float32(2.0) * s
            else:
                d = -s
            if size == mm and d >= hd[0]:
                continue
            p = ids[t]
            if size < mm:
                i = size
                hd[i] = d
                hr[i] = p
                while i > 0:
                    par = (i - 1) // 2
                    if hd[par] < hd[i]:
                        hd[i], hd[par] = hd[par], hd[i]
                        hr[i], hr[par] = hr[par], hr[i]
                        i = par
                    else:
                        break
                size += 1
            else:
                hd[0] = d
                hr[0] = p
                _heap_sift_down(hd, hr, hp, size)
    # sort ascending by (distance, slot) (insertion sort: m is small), as select_probes does
    for a in range(1, size):
        d0 = hd[a]
        r0 = hr[a]
        b = a - 1
        while b >= 0 and (hd[b] > d0 or (hd[b] == d0 and hr[b] > r0)):
            hd[b + 1] = hd[b]
            hr[b + 1] = hr[b]
            b -= 1
        hd[b + 1] = d0
        hr[b + 1] = r0
    k = size
    if prune and size > 0:
        lim = (1.0 + eps2) * (1.0 + eps2) * max(hd[0], np.float32(0.0)) + 1e-12
        k = 1
        while k < size and hd[k] <= lim:
            k += 1
    return hr[:k].copy()


@nb.njit(cache=True, fastmath=True)
def nearest_slots(q, qn, mode, m, eps2, prune, coarse, coarse_norms, member_off, member_vecs,
                  member_norms, members, groups):
    """Navigation for one query over the live centroids, stored contiguously group by group
    (member_vecs, with their slot ids in `members`). No coarse level (coarse has 0 rows):
    one exact pass. Else SPANN-style two-level: the `groups` nearest coarse centroids, then
    exact distances to their members only."""
    n = members.shape[0]
    whole_s = np.zeros(1, dtype=np.int64)
    whole_e = np.full(1, n, dtype=np.int64)
    if coarse.shape[0] == 0:
        return _select_ranges(q, qn, mode, member_vecs, member_norms, members, whole_s,
                              whole_e, m, eps2, prune)
    G = coarse.shape[0]
    gids = np.arange(G)
    ge = np.full(1, G, dtype=np.int64)
    top = _select_ranges(q, qn, mode, coarse, coarse_norms, gids, whole_s, ge, groups,
                         np.inf, False)
    starts = np.empty(top.shape[0], dtype=np.int64)
    ends = np.empty(top.shape[0], dtype=np.int64)
    total = 0
    for t in range(top.shape[0]):
        starts[t] = member_off[top[t]]
        ends[t] = member_off[top[t] + 1]
        total += ends[t] - starts[t]
    if total < 2 * m:    # a wide probe (e.g. nprobe = all): rank every live centroid exactly
        return _select_ranges(q, qn, mode, member_vecs, member_norms, members, whole_s,
                              whole_e, m, eps2, prune)
    return _select_ranges(q, qn, mode, member_vecs, member_norms, members, starts, ends, m,
                          eps2, prune)


@nb.njit(cache=True, fastmath=True)
def search_one(q, mode, m, eps2, prune, coarse, coarse_norms, member_off, member_vecs,
               member_norms, members, groups, vecs, sqn, rids, vers, vmap, packed, kk, k):
    """One query end to end in one call: navigation, posting scan, exact re-rank.
    Returns (row ids (k,), internal distances (k,), postings probed)."""
    qn = np.float32(0.0)
    for j in range(q.shape[0]):
        qn += q[j] * q[j]
    posts = nearest_slots(q, qn, mode, m, eps2, prune, coarse, coarse_norms, member_off,
                          member_vecs, member_norms, members, groups)
    qs = q.reshape(1, q.shape[0])
    qns = np.full(1, qn, dtype=np.float32)
    _hd, hr, hp = scan_topk_grouped(qs, qns, mode, vecs, sqn, rids, vers, vmap, packed,
                                   posts, np.zeros(posts.shape[0], dtype=np.int64), kk)
    out_r, out_d = rerank_exact(qs, mode, vecs, hr, hp, k)
    return out_r[0], out_d[0], posts.shape[0]


@nb.njit(cache=True, fastmath=True)
def split_neighbour_candidates(vecs, rids, vers, vmap, packed, posts, post_cents, a1, a2):
    """LIRE's reassignment scan of a split's neighbourhood in one pass over the arena.

    An entry x of posting posts[t] (centroid c = post_cents[t]) is a candidate when a new
    centroid A is nearer to it than c: |x-A|^2 < |x-c|^2  <=>  2 x.(c-A) < |c|^2 - |A|^2,
    one dot product per new centroid. Returns (arena positions of the candidates, number of
    valid entries evaluated)."""
    dim = a1.shape[0]
    total = 0
    for t in range(posts.shape[0]):
        off, ln = _unpack(packed[posts[t]])
        total += ln
    out = np.empty(total, dtype=np.int64)
    nv = vmap.shape[0]
    m = 0
    evaluated = 0
    g1 = np.empty(dim, dtype=np.float32)
    g2 = np.empty(dim, dtype=np.float32)
    n1 = np.float32(0.0)
    n2 = np.float32(0.0)
    for j in range(dim):
        n1 += a1[j] * a1[j]
        n2 += a2[j] * a2[j]
    for t in range(posts.shape[0]):
        off, ln = _unpack(packed[posts[t]])
        c = post_cents[t]
        nc = np.float32(0.0)
        for j in range(dim):
            nc += c[j] * c[j]
            g1[j] = np.float32(2.0) * (c[j] - a1[j])
            g2[j] = np.float32(2.0) * (c[j] - a2[j])
        b1 = nc - n1
        b2 = nc - n2
        for i in range(off, off + ln):
            rid = rids[i]
            if rid >= nv or vmap[rid] != vers[i]:
                continue
            evaluated += 1
            if _dot32(g1, vecs, i) < b1 or _dot32(g2, vecs, i) < b2:
                out[m] = i
                m += 1
    return out[:m], evaluated


@nb.njit(cache=True)
def select_probes(d, m, eps2, prune):
    """Per row of a (queries x slots) routing-distance matrix (dead slots +inf): the m nearest
    slots, nearest first, cut by the eps2 rule on squared L2 when `prune`. Returns (posting
    ids, query indices, count per query), query-major."""
    nq, P = d.shape
    mm = max(min(m, P), 1)
    posts = np.empty(nq * mm, dtype=np.int64)
    qidx = np.empty(nq * mm, dtype=np.int64)
    counts = np.zeros(nq, dtype=np.int64)
    hd = np.empty(mm, dtype=np.float32)
    hr = np.empty(mm, dtype=np.int64)
    hp = np.zeros(mm, dtype=np.int64)
    t = 0
    for qi in range(nq):
        size = 0
        for p in range(P):
            v = d[qi, p]
            if not np.isfinite(v):
                continue
            if size == mm and v >= hd[0]:
                continue
            if size < mm:
                i = size
                hd[i] = v
                hr[i] = p
                while i > 0:
                    par = (i - 1) // 2
                    if hd[par] < hd[i]:
                        hd[i], hd[par] = hd[par], hd[i]
                        hr[i], hr[par] = hr[par], hr[i]
                        i = par
                    else:
                        break
                size += 1
            else:
                hd[0] = v
                hr[0] = p
                _heap_sift_down(hd, hr, hp, size)
        for a in range(1, size):
            d0 = hd[a]
            r0 = hr[a]
            b = a - 1
            while b >= 0 and (hd[b] > d0 or (hd[b] == d0 and hr[b] > r0)):
                hd[b + 1] = hd[b]
                hr[b + 1] = hr[b]
                b -= 1
            hd[b + 1] = d0
            hr[b + 1] = r0
        n = size
        if prune and size > 0:
            lim = (1.0 + eps2) * (1.0 + eps2) * max(hd[0], np.float32(0.0)) + 1e-12
            n = 1
            while n < size and hd[n] <= lim:
                n += 1
        for a in range(n):
            posts[t] = hr[a]
            qidx[t] = qi
            t += 1
        counts[qi] = n
    return posts[:t], qidx[:t], counts


@nb.njit(cache=True)
def topk_rows(d, c):
    """Per row of d (n x slots, +inf = absent): the c smallest entries' columns and values,
    ascending, padded with -1 / +inf. A heap per row: O(slots log c), no full sort."""
    n, P = d.shape
    ids = np.full((n, c), -1, dtype=np.int64)
    vals = np.full((n, c), np.inf, dtype=np.float64)
    hd = np.empty(c, dtype=np.float32)
    hr = np.empty(c, dtype=np.int64)
    hp = np.zeros(c, dtype=np.int64)
    for qi in range(n):
        size = 0
        for p in range(P):
            v = d[qi, p]
            if not np.isfinite(v):
                continue
            if size == c and v >= hd[0]:
                continue
            if size < c:
                i = size
                hd[i] = v
                hr[i] = p
                while i > 0:
                    par = (i - 1) // 2
                    if hd[par] < hd[i]:
                        hd[i], hd[par] = hd[par], hd[i]
                        hr[i], hr[par] = hr[par], hr[i]
                        i = par
                    else:
                        break
                size += 1
            else:
                hd[0] = v
                hr[0] = p
                _heap_sift_down(hd, hr, hp, size)
        for a in range(1, size):
            d0 = hd[a]
            r0 = hr[a]
            b = a - 1
            while b >= 0 and (hd[b] > d0 or (hd[b] == d0 and hr[b] > r0)):
                hd[b + 1] = hd[b]
                hr[b + 1] = hr[b]
                b -= 1
            hd[b + 1] = d0
            hr[b + 1] = r0
        for a in range(size):
            ids[qi, a] = hr[a]
            vals[qi, a] = hd[a]
    return ids, vals
