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

Every kernel releases the GIL (nogil=True): searches run on other threads while the LIRE
rebalancer scans and reassigns, which is safe because kernels only read arrays a writer never
overwrites (published entries are immutable; readers use their view's copy of `packed`/`vmap`).
"""
from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import binding as _llvm_binding
from llvmlite import ir as _ir
from numba import types as _types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic as _intrinsic

LEN_BITS = 24                      # posting length field of `packed`: up to 16M entries
LEN_MASK = (1 << LEN_BITS) - 1
MODE_L2 = 0
MODE_IP = 1
# One-query scan: rows of the arena prefetched this many rows ahead of the one being scored
# (continuing into the next probed posting). The hardware prefetcher stops at every 4 KB page
# (8 rows of 128 floats) and restarts at every posting; at synth1m a 5-posting scan from DRAM
# went from ~48 us to ~37 us (2-16 rows ahead all measured within noise of 4-8).
PREFETCH_ROWS = 6
_PREFETCH_NAME = "llvm.prefetch.p0" if _llvm_binding.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@_intrinsic
def _prefetch(typingctx, arr, i, j):
    """Prefetch hint (read, keep in all cache levels) for the address of arr[i, j]."""
    sig = _types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]])
        i8p = _ir.IntType(8).as_pointer()
        i32 = _ir.IntType(32)
        fnty = _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32])
        fn = _cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH_NAME)
        builder.call(fn, [builder.bitcast(ptr, i8p), _ir.Constant(i32, 0), _ir.Constant(i32, 3),
                          _ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


@nb.njit(cache=True, inline="always")
def _prefetch_row(vecs, i):
    for j in range(0, vecs.shape[1], 16):      # one hint per 64-byte line of float32
        _prefetch(vecs, i, j)


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


@nb.njit(cache=True, fastmath=True, nogil=True)
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


@nb.njit(cache=True, fastmath=True, nogil=True)
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


@nb.njit(cache=True, fastmath=True, nogil=True)
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


@nb.njit(cache=True, nogil=True)
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


@nb.njit(cache=True, nogil=True)
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


@nb.njit(cache=True, nogil=True)
def valid_counts(rids, vers, vmap, packed, posts):
    """Number of valid entries of each given posting."""
    out = np.zeros(posts.shape[0], dtype=np.int64)
    nv = vmap.shape[0]
    for t in range(posts.shape[0]):
        off, ln = _unpack(packed[posts[t]])
        m = 0
        for i in range(off, off + ln):
            rid = rids[i]
            if rid < nv and vmap[rid] == vers[i]:
                m += 1
        out[t] = m
    return out


@nb.njit(cache=True, nogil=True)
def copy_valid(vecs, sqn, rids, vers, vmap, packed, posts, offs, dvecs, dsqn, drids, dvers):
    """Copy the valid entries of postings posts[t] to position offs[t] of the destination
    arrays (arena compaction: one pass, no intermediate gather)."""
    nv = vmap.shape[0]
    dim = vecs.shape[1]
    for t in range(posts.shape[0]):
        off, ln = _unpack(packed[posts[t]])
        o = offs[t]
        for i in range(off, off + ln):
            rid = rids[i]
            if rid < nv and vmap[rid] == vers[i]:
                for j in range(dim):
                    dvecs[o, j] = vecs[i, j]
                dsqn[o] = sqn[i]
                drids[o] = rid
                dvers[o] = vers[i]
                o += 1


@nb.njit(cache=True, nogil=True)
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


@nb.njit(cache=True, fastmath=True, inline="always")
def _dot_u8(w, codes, i):
    s = np.float32(0.0)
    for j in range(w.shape[0]):
        s += w[j] * np.float32(codes[i, j])
    return s


@nb.njit(cache=True, fastmath=True, nogil=True)
def nearest_slots(q, qn, mode, m, eps2, prune, lo, step, codes, code_norms, code_err, bounds,
                  slots, cents, cnorms):
    """Navigation for one query: the m nearest live centroids (slot ids), nearest first by
    (distance, slot), cut by the eps2 rule on squared L2 when `prune` -- the same answer as
    an exact float32 pass over every live centroid, at a quarter of the memory traffic.

    Pass 1 scores the 8-bit codes of the live centroids (`codes` row r is slot `slots[r]`,
    reconstructed as lo + step * code, |c - reconstruction| <= code_err[r] <= bounds[0] =
    err_max; bounds[1] = the largest code_norms).
    By the triangle inequality a centroid can only be among the exact m nearest (or within
    the eps2 cut) if its approximate distance minus its error is within the m-th smallest
    approximate distance plus err_max; those few candidates are re-scored exactly on the
    float32 centroids (`cents`/`cnorms`, slot indexed) and ranked as the exact pass would."""
    n = codes.shape[0]
    dim = q.shape[0]
    mm = max(min(m, n), 1)
    w = np.empty(dim, dtype=np.float32)
    base = np.float32(0.0)
    for j in range(dim):
        w[j] = q[j] * step[j]
        base += q[j] * lo[j]
    approx = np.empty(n, dtype=np.float32)
    if mode == MODE_L2:
        for r in range(n):
            approx[r] = qn + code_norms[r] - np.float32(2.0) * (base + _dot_u8(w, codes, r))
    else:
        for r in range(n):
            approx[r] = -(base + _dot_u8(w, codes, r))
    hd = np.full(mm, np.inf, dtype=np.float32)     # max-heap of the mm smallest approx scores
    size = 0
    for r in range(n):
        a = approx[r]
        if size < mm:
            i = size
            hd[i] = a
            while i > 0:
                par = (i - 1) // 2
                if hd[par] < hd[i]:
                    hd[i], hd[par] = hd[par], hd[i]
                    i = par
                else:
                    break
            size += 1
        elif a < hd[0]:
            hd[0] = a
            i = 0
            while True:
                c = 2 * i + 1
                if c >= size:
                    break
                if c + 1 < size and hd[c + 1] > hd[c]:
                    c += 1
                if hd[c] > hd[i]:
                    hd[i], hd[c] = hd[c], hd[i]
                    i = c
                else:
                    break
    amin = np.float32(np.inf)
    for i in range(size):
        amin = min(amin, hd[i])
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    # float32 rounding of both the approximate and the exact formulas: absorbed by `slack`
    qabs = np.sqrt(max(qn, np.float32(0.0)))
    err_max = bounds[0]
    slack = 1e-4 * (qn + bounds[1]) + 1e-12
    cand = np.empty(n, dtype=np.int64)
    nc = 0
    if mode == MODE_L2:
        # exact m-th distance <= its upper bound sqrt(approx) + err_max; nearest likewise
        t = np.sqrt(max(hd[0], 0.0) + slack) + err_max
        if prune:
            t = min(t, (1.0 + eps2) * (np.sqrt(max(amin, 0.0) + slack) + err_max))
        wide = (t + err_max) * (t + err_max) + slack
        for r in range(n):
            a = approx[r]
            if a <= wide:
                b = t + code_err[r]
                if a <= b * b + slack:
                    cand[nc] = slots[r]
                    nc += 1
    else:
        # |q.c - q.c'| <= |q| |c - c'|
        t = hd[0] + qabs * err_max + slack
        wide = t + qabs * err_max
        for r in range(n):
            a = approx[r]
            if a <= wide and a - qabs * code_err[r] <= t:
                cand[nc] = slots[r]
                nc += 1
    return _select_rows(q, qn, mode, cents, cnorms, cand[:nc], m, eps2, prune)


@nb.njit(cache=True, fastmath=True, nogil=True)
def _select_rows(q, qn, mode, vecs, norms, rows, m, eps2, prune):
    """The m nearest of vecs[rows] (their row ids), nearest first by (distance, row), cut by
    the eps2 rule on squared L2 when `prune`."""
    mm = max(m, 1)
    hd = np.full(mm, np.inf, dtype=np.float32)
    hr = np.full(mm, -1, dtype=np.int64)
    size = 0
    for t in range(rows.shape[0]):
        p = rows[t]
        s = _dot32(q, vecs, p)
        if mode == MODE_L2:
            d = qn + norms[p] - np.float32(2.0) * s
        else:
            d = -s
        if size == mm and (d > hd[0] or (d == hd[0] and p > hr[0])):
            continue
        if size < mm:
            i = size
            hd[i] = d
            hr[i] = p
            while i > 0:
                par = (i - 1) // 2
                if hd[par] < hd[i] or (hd[par] == hd[i] and hr[par] < hr[i]):
                    hd[i], hd[par] = hd[par], hd[i]
                    hr[i], hr[par] = hr[par], hr[i]
                    i = par
                else:
                    break
            size += 1
        else:
            hd[0] = d
            hr[0] = p
            i = 0
            while True:
                c = 2 * i + 1
                if c >= size:
                    break
                if c + 1 < size and (hd[c + 1] > hd[c] or (hd[c + 1] == hd[c] and hr[c + 1] > hr[c])):
                    c += 1
                if hd[c] > hd[i] or (hd[c] == hd[i] and hr[c] > hr[i]):
                    hd[i], hd[c] = hd[c], hd[i]
                    hr[i], hr[c] = hr[c], hr[i]
                    i = c
                else:
                    break
    # sort ascending by (distance, row) (insertion sort: m is small)
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


@nb.njit(cache=True, fastmath=True, nogil=True)
def _scan_one(q, qn, mode, vecs, sqn, rids, vers, vmap, packed, posts, kk):
    """scan_topk_grouped for one query, with the arena rows prefetched PREFETCH_ROWS ahead
    across posting boundaries. Returns the heap (distances, row ids, positions, size)."""
    hd = np.full(kk, np.inf, dtype=np.float32)
    hr = np.full(kk, -1, dtype=np.int64)
    hp = np.full(kk, -1, dtype=np.int64)
    size = 0
    nv = vmap.shape[0]
    npost = posts.shape[0]
    if npost == 0:
        return hd, hr, hp, size
    off, ln = _unpack(packed[posts[0]])
    for i in range(off, off + min(ln, PREFETCH_ROWS)):
        _prefetch_row(vecs, i)
    for t in range(npost):
        noff, nln = 0, 0
        if t + 1 < npost:
            noff, nln = _unpack(packed[posts[t + 1]])
        end = off + ln
        for i in range(off, end):
            j = i + PREFETCH_ROWS
            if j < end:
                _prefetch_row(vecs, j)
            elif j - end < nln:
                _prefetch_row(vecs, noff + (j - end))
            s = _dot32(q, vecs, i)
            if mode == MODE_L2:
                d = qn + sqn[i] - np.float32(2.0) * s
            else:
                d = -s
            if size == kk and d >= hd[0]:
                continue
            rid = rids[i]
            if rid >= nv or vmap[rid] != vers[i]:
                continue
            size = _heap_push(hd, hr, hp, size, d, rid, i)
        off, ln = noff, nln
    return hd, hr, hp, size


@nb.njit(cache=True, inline="always")
def _finite_norm(q):
    """(every entry finite, squared norm in float32) of a query (shared by the one-query
    entry points so that each computes the same qn)."""
    bits = q.view(np.uint32)       # exponent bits: fastmath may fold a float isfinite away
    for j in range(bits.shape[0]):
        if bits[j] & 0x7F800000 == 0x7F800000:
            return False, np.float32(0.0)
    qn = np.float32(0.0)
    for j in range(q.shape[0]):
        qn += q[j] * q[j]
    return True, qn


@nb.njit(cache=True, fastmath=True, nogil=True)
def probe_one(q, mode, m, eps2, prune, lo, step, codes, code_norms, code_err, bounds, slots,
              cents, cnorms):
    """The navigation half of `search_one`: (postings to probe, nearest first; the query's
    squared norm; False when the query holds a NaN or an infinity, nothing probed)."""
    ok, qn = _finite_norm(q)
    if not ok:
        return np.zeros(0, dtype=np.int64), qn, False
    return nearest_slots(q, qn, mode, m, eps2, prune, lo, step, codes, code_norms, code_err,
                         bounds, slots, cents, cnorms), qn, True


@nb.njit(cache=True, fastmath=True, inline="always")
def _rerank_one(q, mode, vecs, hd, hr, hp, size, kk, k, finish):
    """The end of the one-query path: (row ids (1, k), finished distances (1, k), worst) from
    the scan's heap, re-scored exactly in float64 and sorted by (distance, row id)."""
    out_r = np.full((1, k), -1, dtype=np.int64)
    out_d = np.full((1, k), np.inf, dtype=np.float64)
    worst = np.float64(hd[0]) if size == kk else np.inf
    dd = np.empty(size, dtype=np.float64)
    rr = np.empty(size, dtype=np.int64)
    for t in range(size):
        dd[t] = _exact(mode, q, vecs, hp[t])
        rr[t] = hr[t]
    for a in range(1, size):
        d0 = dd[a]
        r0 = rr[a]
        b = a - 1
        while b >= 0 and (dd[b] > d0 or (dd[b] == d0 and rr[b] > r0)):
            dd[b + 1] = dd[b]
            rr[b + 1] = rr[b]
            b -= 1
        dd[b + 1] = d0
        rr[b + 1] = r0
    for a in range(min(size, k)):
        out_r[0, a] = rr[a]
        d = dd[a]
        if finish == 0:
            d = np.sqrt(max(d, 0.0))
        elif finish == 1:
            d = d / 2.0
        out_d[0, a] = d
    return out_r, out_d, worst


@nb.njit(cache=True, fastmath=True, nogil=True)
def search_probed_one(q, qn, mode, posts, vecs, sqn, rids, vers, vmap, packed, kk, k, finish):
    """The scan half of `search_one` over the postings `posts` (from `probe_one`): posting
    scan, exact re-rank and finished distances, returned as `search_one` returns them."""
    hd, hr, hp, size = _scan_one(q, qn, mode, vecs, sqn, rids, vers, vmap, packed, posts, kk)
    out_r, out_d, worst = _rerank_one(q, mode, vecs, hd, hr, hp, size, kk, k, finish)
    return out_r, out_d, posts.shape[0], worst


@nb.njit(cache=True, fastmath=True, nogil=True)
def search_one(q, mode, m, eps2, prune, lo, step, codes, code_norms, code_err, bounds, slots,
               cents, cnorms, vecs, sqn, rids, vers, vmap, packed, kk, k, finish):
    """One query end to end in one call: navigation, posting scan, exact re-rank (what
    `probe_one` then `search_probed_one` do, fused: one dispatch on the latency path).

    Returns (row ids (1, k) -1 padded, distances (1, k) +inf padded, postings probed, worst):
    probed is -1 (nothing searched) when the query holds a NaN or an infinity; worst is the
    largest float32 score the full heap held (+inf if the heap never filled: every valid row
    probed was re-scored exactly), for the caller's check that float32 rounding cannot have
    kept a nearer row out. Distances are finished for the metric: `finish` 0 = sqrt of squared
    L2, 1 = half of it (cosine on unit vectors), 2 = as scored (-dot)."""
    ok, qn = _finite_norm(q)
    if not ok:
        return (np.full((1, k), -1, dtype=np.int64), np.full((1, k), np.inf, dtype=np.float64),
                -1, np.inf)
    posts = nearest_slots(q, qn, mode, m, eps2, prune, lo, step, codes, code_norms, code_err,
                          bounds, slots, cents, cnorms)
    hd, hr, hp, size = _scan_one(q, qn, mode, vecs, sqn, rids, vers, vmap, packed, posts, kk)
    out_r, out_d, worst = _rerank_one(q, mode, vecs, hd, hr, hp, size, kk, k, finish)
    return out_r, out_d, posts.shape[0], worst


@nb.njit(cache=True, fastmath=True, nogil=True)
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


@nb.njit(cache=True, nogil=True)
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


@nb.njit(cache=True, nogil=True)
def topk_within(d, mins, c, ratio):
    """Per row of d (n x slots, +inf = absent): the at most c smallest entries that are
    <= ratio x the row's minimum (`mins`, from numpy's vectorised d.min(axis=1)), their
    columns and values ascending (ties by column), padded with -1 / +inf.

    Replica assignment only looks at centroids within (1 + eps1) of the nearest, so one flat
    pass collecting the few entries under the bound replaces a heap over every entry: ~0.8 ns
    per entry instead of ~4 (the heap's branches mispredict)."""
    n, P = d.shape
    ids = np.full((n, c), -1, dtype=np.int64)
    vals = np.full((n, c), np.inf, dtype=np.float64)
    bd = np.empty(P, dtype=np.float64)
    br = np.empty(P, dtype=np.int64)
    for qi in range(n):
        row = d[qi]
        m = mins[qi]
        if not m < np.inf:
            continue
        thr = m * ratio
        k = 0
        for p in range(P):
            if row[p] <= thr:
                bd[k] = row[p]
                br[k] = p
                k += 1
        # insertion sort by (value, column): k is a handful
        for a in range(1, k):
            d0 = bd[a]
            r0 = br[a]
            b = a - 1
            while b >= 0 and (bd[b] > d0 or (bd[b] == d0 and br[b] > r0)):
                bd[b + 1] = bd[b]
                br[b + 1] = br[b]
                b -= 1
            bd[b + 1] = d0
            br[b + 1] = r0
        for a in range(min(k, c)):
            ids[qi, a] = br[a]
            vals[qi, a] = bd[a]
    return ids, vals


