"""The partition index's scan (unidb.index.iterator protocol, VBase relaxed monotonicity).

Yields the live rows of `batch_partitions` postings at a time, postings in increasing centroid
distance, each batch sorted by distance, every row at most once (replicas deduplicated,
deleted and stale copies skipped). It reads the index's published view (routing, posting view,
version map) taken when the scan starts, so a concurrent split or merge cannot make it skip or repeat a row.

Relaxed-monotonicity defaults (ALGORITHMS.md §1): E = DEFAULT_E (the k of a typical top-k; an
operator that knows its K passes its own), w = the vectors of the partitions probed so far
(`default_w` grows as the scan advances, at least 1).
"""
from __future__ import annotations

import numpy as np

from unidb.kernels import partition as K
from unidb.index.iterator import ScanBatch

DEFAULT_E = 10


class PartitionScan:
    default_E: int = DEFAULT_E

    def __init__(self, index, q: np.ndarray, batch_partitions: int = 1,
                 eps2: float | None = None, max_partitions: int | None = None):
        if batch_partitions < 1:
            raise ValueError(f"batch_partitions must be >= 1, got {batch_partitions}")
        self._index = index
        self._q = q
        self._batch = int(batch_partitions)
        view = index.view()               # one consistent snapshot for the whole scan
        self._routing = view.routing
        self._postings = view.postings
        self._vmap = view.vmap
        order, d = self._routing.order_all(q, index._mode == K.MODE_IP)
        if eps2 is not None and len(order) and index._mode != K.MODE_IP:
            dd = np.sqrt(np.maximum(d, 0.0))
            order = order[dd <= (1.0 + float(eps2)) * dd[0] + 1e-12]
        if max_partitions is not None:
            order = order[:int(max_partitions)]
        self._order = order
        self._next = 0
        self._seen = np.zeros(len(self._vmap), dtype=bool)
        self._probed_vectors = 0

    @property
    def default_w(self) -> int:
        return max(1, self._probed_vectors)

    def cost(self) -> int:
        """Upper bound: stored entries of the postings not yet scanned."""
        rest = self._order[self._next:]
        return int(self._postings.lengths(rest).sum()) if len(rest) else 0

    def next_batch(self) -> ScanBatch | None:
        while self._next < len(self._order):
            posts = self._order[self._next:self._next + self._batch]
            self._next += len(posts)
            r, d = self._postings.scan_all(self._q, self._index._mode, self._vmap,
                                           posts.astype(np.int64))
            self._probed_vectors += len(r)
            if len(r) == 0:
                continue
            o = np.lexsort((r, d))
            r, d = r[o], d[o]
            fresh = ~self._seen[r]
            r, d = r[fresh], d[fresh]
            r, first = np.unique(r, return_index=True)    # replicas inside this batch
            d = d[first]
            o = np.lexsort((r, d))
            r, d = r[o], d[o]
            self._seen[r] = True
            if len(r) == 0:
                continue
            return ScanBatch(r, self._index._finish_dist(d))
        return None
