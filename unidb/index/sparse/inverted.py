"""The inverted index over row ids: segments, updates, exact pruned top-k, scan, persistence.

Shared by TextIndex (BM25) and SparseIndex (dot product); a subclass only turns its query into
(term ids, query weights) and says how a posting value is scored (`_MODE`).

Life cycle (Lucene's, simplified):
- `add` puts small batches into an in-memory buffer (searchable at once: the buffer is frozen
  into a segment on the next query and cached until it changes); a buffer that reaches
  `buffer_docs` docs (IndexOptions.text_buffer_docs), or a batch at least that big, becomes an
  immutable segment.
- `delete` clears the row's `live` flag in its segment at once and removes its terms from the
  live statistics; `merge()` (also run when there are more than `max_segments` segments)
  rewrites segments without their deleted docs.
- Statistics are those of the LIVE docs (N, df, avgdl): deleted docs stop counting the moment
  they are deleted, unlike Lucene (which counts them until a merge). Scores therefore never
  depend on the merge state: an index equals one rebuilt from its live docs.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from unidb.errors import NotFoundError, ValidationError
from unidb.kernels import sparse as K
from unidb.options import DEFAULT, TOPK_ALGORITHMS
from unidb.storage import files
from unidb.index.rowfilter import allowed
from unidb.index.sparse.scan import Allow, rank_rows
from unidb.index.sparse.postings import (BLOCK, Segment, build_segment, forward_positions,
                                         merge_segments, segment_from_arrays)

# The buffer size (docs before the mutable buffer becomes a segment) and the segment count
# that triggers a merge are IndexOptions.text_buffer_docs / text_max_segments
# (unidb/options.py, with their reasons); a merge takes the smallest MERGE_FACTOR segments
# (log-structured, so each doc is rewritten O(log N) times).
MERGE_FACTOR = 4

# Planner: MaxScore (with block-max skipping) pays off only when a segment is large enough
# that skipping whole blocks beats accumulating every posting. Measured (docs/text-search.md):
# term-at-a-time was faster for every SciFact query on segments of 5k, 52k and 207k docs, so
# MaxScore is used only on segments of at least MAXSCORE_MIN_DOCS docs whose query postings
# are at least MAXSCORE_MIN_POSTINGS_PER_DOC per doc (long lists: where skipping helps).
MAXSCORE_MIN_DOCS = 1_000_000
MAXSCORE_MIN_POSTINGS_PER_DOC = 0.5

MANIFEST = "index.json"
FORMAT_VERSION = 1
_NEG_INF = float("-inf")


class InvertedIndex:
    """Doc-id ordered blocked postings over row ids, searched exactly with MaxScore."""

    _MODE = K.MODE_DOT
    _AUX_IS_DOC_LEN = False
    _KIND = "inverted"
    # Keep live document frequencies per term id (a dense array: BM25 needs them; sparse
    # vectors do not, and their term ids may be as large as 2**31).
    _TRACK_DF = False

    def __init__(self) -> None:
        self._segments: list[Segment] = []
        self._buf: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        self._buf_seg: Segment | None = None
        self._next_seg_id = 0
        self._df = np.zeros(1024, np.int64)   # live document frequency per term id
        self._n_live = 0
        self._sum_len = 0.0
        self._gen = 0
        self._stats_ver = 0    # bumped by every write: keys the per-segment BM25 caches
        self._lock = threading.RLock()
        self._buffer_docs = DEFAULT.indexes.text_buffer_docs
        self._max_segments = DEFAULT.indexes.text_max_segments
        self._topk_algorithm = DEFAULT.indexes.text_topk

    def tune(self, *, buffer_docs: int | None = None, max_segments: int | None = None,
             topk: str | None = None) -> None:
        """Maintenance and algorithm choices (IndexOptions: text_buffer_docs,
        text_max_segments, text_topk). They change when segments are sealed and merged and
        which exact top-k algorithm runs, never a result, so they are not saved with the
        index: its owner tunes it after build or load."""
        for name, v in (("buffer_docs", buffer_docs), ("max_segments", max_segments)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValidationError(f"{name} must be a positive integer, got {v!r}")
        if topk is not None and topk not in TOPK_ALGORITHMS:
            raise ValidationError(f"topk must be one of {TOPK_ALGORITHMS}, got {topk!r}")
        with self._lock:
            if buffer_docs is not None:
                self._buffer_docs = buffer_docs
            if max_segments is not None:
                self._max_segments = max_segments
            if topk is not None:
                self._topk_algorithm = topk

    def _use_maxscore(self, n_docs: int, n_postings: int) -> bool:
        if self._topk_algorithm == "auto":
            return use_maxscore(n_docs, n_postings)
        return self._topk_algorithm == "maxscore"

    # ------------------------------------------------------------------ scoring hooks
    def _params(self) -> tuple[float, float, float]:
        """(k1, b, avgdl) for the kernels; dot-product indexes ignore them."""
        return 0.0, 0.0, 1.0

    def _config(self) -> dict:
        return {}

    # ------------------------------------------------------------------ updates
    def _add_docs(self, row_ids: np.ndarray, terms: list[np.ndarray], vals: list[np.ndarray],
                  lens: np.ndarray) -> None:
        """Index docs given in forward form; docs with no terms are not indexed."""
        row_ids = np.asarray(row_ids, np.int64).ravel()
        if len(row_ids) != len(terms):
            raise ValidationError(f"{len(row_ids)} row ids but {len(terms)} documents")
        if len(np.unique(row_ids)) != len(row_ids):
            raise ValidationError("duplicate row ids in one add() batch")
        keep = np.fromiter((len(t) > 0 for t in terms), bool, len(terms))
        with self._lock:
            clash = self._live_rows(row_ids)
            if clash.any():
                raise ValidationError(
                    f"row ids already indexed: {row_ids[clash][:5].tolist()}; delete them first")
            idx = np.flatnonzero(keep)
            if len(idx) == 0:
                return
            t_list = [terms[i] for i in idx]
            v_list = [vals[i] for i in idx]
            rows = row_ids[idx]
            dls = np.asarray(lens, np.float64)[idx]
            all_t = np.concatenate(t_list).astype(np.int64)
            if all_t.min() < 0:
                raise ValidationError("term ids must be >= 0")
            if self._TRACK_DF:
                self._grow_df(int(all_t.max()) + 1)
                np.add.at(self._df, all_t, 1)
            self._n_live += len(rows)
            self._sum_len += float(dls.sum())
            self._stats_ver += 1
            if len(rows) >= self._buffer_docs:
                counts = np.fromiter((len(t) for t in t_list), np.int64, len(t_list))
                seg = build_segment(rows, np.concatenate(([0], np.cumsum(counts))),
                                    all_t.astype(np.int32), np.concatenate(v_list), dls,
                                    self._AUX_IS_DOC_LEN)
                self._append_segment(seg)
            else:
                for r, t, v, dl in zip(rows.tolist(), t_list, v_list, dls.tolist()):
                    self._buf[r] = (t, v, dl)
                self._buf_seg = None
                if len(self._buf) >= self._buffer_docs:
                    self._seal_buffer()

    def delete(self, row_ids) -> int:
        """Delete rows (unknown or already deleted ids are ignored); returns how many were live."""
        row_ids = np.unique(np.asarray(row_ids, np.int64).ravel())
        n = 0
        with self._lock:
            for seg in self._segments:
                found, loc = seg.locate(row_ids)
                loc = loc[found]
                loc = loc[seg.live[loc] != 0]
                if len(loc) == 0:
                    continue
                if self._TRACK_DF:
                    np.subtract.at(self._df, seg.fwd_term[forward_positions(seg.doc_ptr, loc)],
                                   1)
                self._sum_len -= float(seg.doc_len[loc].astype(np.float64).sum())
                seg.live[loc] = 0
                n += len(loc)
            for r in row_ids.tolist():
                doc = self._buf.pop(r, None)
                if doc is not None:
                    if self._TRACK_DF:
                        self._df[doc[0]] -= 1
                    self._sum_len -= doc[2]
                    self._buf_seg = None
                    n += 1
            self._n_live -= n
            self._stats_ver += 1
        return n

    def merge(self) -> None:
        """Seal the buffer and rewrite all segments as one without deleted docs."""
        with self._lock:
            self._seal_buffer()
            if len(self._segments) > 1 or any(s.n_live < s.n_docs for s in self._segments):
                seg = merge_segments(self._segments, self._AUX_IS_DOC_LEN)
                self._segments = []
                if seg.n_docs:
                    self._append_segment(seg)

    def _live_rows(self, row_ids: np.ndarray) -> np.ndarray:
        hit = np.fromiter((r in self._buf for r in row_ids.tolist()), bool, len(row_ids))
        for seg in self._segments:
            found, loc = seg.locate(row_ids)
            hit |= found & (seg.live[loc] != 0)
        return hit

    def _grow_df(self, n: int) -> None:
        if n > len(self._df):
            df = np.zeros(max(n, 2 * len(self._df)), np.int64)
            df[:len(self._df)] = self._df
            self._df = df

    def _seal_buffer(self) -> None:
        if self._buf:
            seg = self._freeze_buffer()
            self._buf = {}
            self._buf_seg = None
            self._append_segment(seg)

    def _append_segment(self, seg: Segment) -> None:
        seg.seg_id = self._next_seg_id
        self._next_seg_id += 1
        self._segments = self._segments + [seg]
        if len(self._segments) > self._max_segments:
            small = sorted(self._segments, key=lambda s: s.n_live)[:MERGE_FACTOR]
            merged = merge_segments(small, self._AUX_IS_DOC_LEN)
            merged.seg_id = self._next_seg_id
            self._next_seg_id += 1
            self._segments = [s for s in self._segments if all(s is not m for m in small)]
            if merged.n_docs:
                self._segments.append(merged)

    def _freeze_buffer(self) -> Segment:
        rows = np.fromiter(self._buf.keys(), np.int64, len(self._buf))
        docs = list(self._buf.values())
        counts = np.fromiter((len(d[0]) for d in docs), np.int64, len(docs))
        return build_segment(rows, np.concatenate(([0], np.cumsum(counts))),
                             np.concatenate([d[0] for d in docs]).astype(np.int32),
                             np.concatenate([d[1] for d in docs]).astype(np.float32),
                             np.fromiter((d[2] for d in docs), np.float64, len(docs)),
                             self._AUX_IS_DOC_LEN)

    def _view(self) -> list[Segment]:
        """The segments a query reads: sealed ones (largest first) plus the frozen buffer."""
        with self._lock:
            segs = sorted(self._segments, key=lambda s: -s.n_docs)
            if self._buf:
                if self._buf_seg is None:
                    self._buf_seg = self._freeze_buffer()
                segs.append(self._buf_seg)
            return segs

    # ------------------------------------------------------------------ query core
    @staticmethod
    def _allowed(seg: Segment, allow: Allow | None) -> np.ndarray:
        if allow is None:
            return seg.live
        mask = allowed(allow, seg.row_ids)
        if mask.shape != seg.row_ids.shape:
            raise ValidationError(
                f"allow() returned shape {mask.shape}, expected {seg.row_ids.shape}")
        return (seg.live != 0) & mask

    def _query_params(self) -> tuple[float, float, float, int]:
        """(k1, b, avgdl, stats version), read once per query so that a concurrent write
        cannot mix two sets of statistics within one query."""
        with self._lock:
            return (*self._params(), self._stats_ver)

    def _scoring(self, seg: Segment, terms: np.ndarray, qp) -> tuple:
        """(tp_s, tp_e, tb_s, tb_e, posting values, kernel mode) of a query in one segment.
        For BM25 the posting values are the segment's cached tf / (tf + norm(dl)), refreshed
        for the query's terms when the statistics changed since they were computed."""
        tp_s, tp_e, tb_s, tb_e, local = seg.lookup_local(terms)
        if self._MODE != K.MODE_BM25:
            return tp_s, tp_e, tb_s, tb_e, seg.post_val, self._MODE
        if seg.bm25_cache is None:
            seg.bm25_cache = np.zeros(len(seg.post_doc))
            seg.bm25_ver = np.full(len(seg.terms), -1, np.int64)
        k1, b, avgdl, ver = qp
        K.fill_bm25_cache(tp_s, tp_e, local, seg.post_doc, seg.post_val, seg.doc_len, k1, b,
                          avgdl, ver, seg.bm25_cache, seg.bm25_ver)
        return tp_s, tp_e, tb_s, tb_e, seg.bm25_cache, K.MODE_BM25_CACHED

    def _topk(self, terms: np.ndarray, qw: np.ndarray, k: int, allow: Allow | None,
              exhaustive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if k <= 0 or len(terms) == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        if exhaustive:
            rows, scores = self._score_all(terms, qw, allow)
            return rows[:k], scores[:k]
        qp = self._query_params()
        k1, b, avgdl, _ = qp
        theta0 = _NEG_INF
        rows_acc, sc_acc = [], []
        for seg in self._view():
            if seg.n_docs == 0:
                continue
            tp_s, tp_e, tb_s, tb_e, pv, mode = self._scoring(seg, terms, qp)
            n_post = int(tp_e.sum() - tp_s.sum())
            if n_post == 0:
                continue
            if not self._use_maxscore(seg.n_docs, n_post):
                ids, sc = K.exhaustive_topk(tp_s, tp_e, seg.post_doc, pv, seg.doc_len,
                                            self._allowed(seg, allow), qw, mode, k1, b,
                                            avgdl, seg.n_docs, k, theta0)
            else:
                ids, sc, _ = K.maxscore_topk(tp_s, tp_e, tb_s, tb_e, seg.post_doc, pv,
                                             seg.blk_last, seg.blk_max, seg.blk_aux,
                                             seg.doc_len, self._allowed(seg, allow), qw, mode,
                                             k1, b, avgdl, k, theta0, BLOCK)
            if len(ids) == 0:
                continue
            rows_acc.append(seg.row_ids[ids])
            sc_acc.append(sc)
            if len(rows_acc) > 1:
                r, s = rank_rows(np.concatenate(rows_acc), np.concatenate(sc_acc))
                rows_acc, sc_acc = [r[:k]], [s[:k]]
            if len(rows_acc[0]) >= k:
                theta0 = float(sc_acc[0][k - 1])
        if not rows_acc:
            return np.zeros(0, np.int64), np.zeros(0)
        return rows_acc[0][:k], sc_acc[0][:k]

    def _exhaustive_list(self, terms: np.ndarray, qw: np.ndarray, allow: Allow | None
                         ) -> tuple[np.ndarray, np.ndarray] | None:
        """The full (row ids, scores) list when the planner would score this query
        term-at-a-time in every segment anyway (so holding it costs nothing extra), else None."""
        segs = [s for s in self._view() if s.n_docs]
        qp = self._query_params()
        looked = [self._scoring(seg, terms, qp) for seg in segs]
        if any(self._use_maxscore(seg.n_docs, int((lk[1] - lk[0]).sum()))
               for seg, lk in zip(segs, looked)):
            return None
        return self._all_scores(terms, qw, allow, segs, looked, qp)

    def _all_scores(self, terms: np.ndarray, qw: np.ndarray, allow: Allow | None,
                    segs: list[Segment] | None = None, looked: list | None = None,
                    qp: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every allowed doc matching >= 1 term, unordered: (row ids, scores)."""
        if segs is None:
            segs = [s for s in self._view() if s.n_docs]
            qp = self._query_params()
            looked = [self._scoring(seg, terms, qp) for seg in segs] if len(terms) else []
        k1, b, avgdl, _ = qp
        rows_acc, sc_acc = [np.zeros(0, np.int64)], [np.zeros(0)]
        if len(terms):
            for seg, (tp_s, tp_e, _, _, pv, mode) in zip(segs, looked):
                ids, sc = K.exhaustive_scores(tp_s, tp_e, seg.post_doc, pv, seg.doc_len,
                                              self._allowed(seg, allow), qw, mode, k1, b,
                                              avgdl, seg.n_docs)
                rows_acc.append(seg.row_ids[ids])
                sc_acc.append(sc)
        if len(rows_acc) == 2:
            return rows_acc[1], sc_acc[1]
        return np.concatenate(rows_acc), np.concatenate(sc_acc)

    def _score_all(self, terms: np.ndarray, qw: np.ndarray, allow: Allow | None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Every allowed doc matching >= 1 term, best first (ties: smaller row id)."""
        rows, scores = self._all_scores(terms, qw, allow)
        return rank_rows(rows, scores)

    def _scores_for(self, terms: np.ndarray, qw: np.ndarray, row_ids) -> np.ndarray:
        """Scores of given rows; NaN where the row is unknown, deleted or matches no term."""
        row_ids = np.asarray(row_ids, np.int64).ravel()
        out = np.full(len(row_ids), np.nan)
        if len(terms) == 0 or len(row_ids) == 0:
            return out
        qp = self._query_params()
        k1, b, avgdl, _ = qp
        for seg in self._view():
            if seg.n_docs == 0:
                continue
            found, loc = seg.locate(row_ids)
            found &= seg.live[loc] != 0
            if not found.any():
                continue
            tp_s, tp_e, _, _, pv, mode = self._scoring(seg, terms, qp)
            sel = np.flatnonzero(found)
            sc, matched = K.random_access_scores(loc[sel].astype(np.int64), tp_s, tp_e,
                                                 seg.post_doc, pv, seg.doc_len, qw, mode, k1, b,
                                                 avgdl)
            out[sel[matched]] = sc[matched]
        return out

    def _upper_bound(self, terms: np.ndarray, qw: np.ndarray) -> float:
        k1, b, avgdl = self._params()
        best = 0.0
        for seg in self._view():
            if seg.n_docs == 0:
                continue
            _, _, tb_s, tb_e = seg.lookup(terms)
            ub = K.term_upper_bounds(tb_s, tb_e, seg.blk_max, seg.blk_aux, qw, self._MODE,
                                     k1, b, avgdl)
            best = max(best, float(ub.sum()))
        return best

    def _cost(self, terms: np.ndarray) -> int:
        n = 0
        for seg in self._view():
            tp_s, tp_e, _, _ = seg.lookup(terms)
            n += int((tp_e - tp_s).sum())
        return n

    # ------------------------------------------------------------------ introspection
    def __len__(self) -> int:
        """Live (indexed, not deleted) documents."""
        return self._n_live

    # stats(): docs stored (deleted ones until a merge), live docs (= live_rows), distinct
    # terms, postings, segments (the frozen buffer counts as one), buffered docs, bytes held
    STATS_KEYS = ("docs", "live_docs", "live_rows", "terms", "postings", "segments",
                  "buffered_docs", "bytes")

    def stats(self) -> dict:
        segs = self._view()
        return {
            "docs": sum(s.n_docs for s in segs),
            "live_docs": self._n_live,
            "live_rows": self._n_live,
            "terms": int((self._df > 0).sum()) if self._TRACK_DF else
            len(np.unique(np.concatenate([s.terms for s in segs] + [np.zeros(0, np.int32)]))),
            "postings": sum(len(s.post_doc) for s in segs),
            "segments": len(segs),
            "buffered_docs": len(self._buf),
            "bytes": sum(s.nbytes() for s in segs) + self._df.nbytes,
        }

    def close(self) -> None:
        """Nothing to release: segments are in-memory arrays (read whole from their files),
        freed with the index; no thread runs. A no-op, idempotent."""

    # ------------------------------------------------------------------ persistence
    def _extra_files(self, folder: Path, gen: int) -> dict:
        """Subclass hook: write extra files for this generation; return manifest entries."""
        return {}

    def _load_extra(self, folder: Path, manifest: dict) -> None:
        pass

    def save(self, folder, covered: int) -> None:
        """Persist crash-safely: new files first, then an atomic manifest replace, then the
        files the new manifest no longer names are deleted. `covered` is the caller's position
        (e.g. WAL offset) this state reflects; load() returns it."""
        folder = files.ensure_dir(folder)
        with self._lock:
            self._seal_buffer()
            self._gen += 1
            gen = self._gen
            entries = []
            for seg in self._segments:
                seg_file = f"seg-{seg.seg_id}.npz"
                if not (folder / seg_file).exists():
                    files.write_arrays(folder / seg_file, seg.arrays())
                live_file = f"live-{seg.seg_id}-{gen}.npy"
                files.write_npy(folder / live_file, seg.live)
                entries.append({"id": seg.seg_id, "file": seg_file, "live": live_file})
            manifest = {"format": FORMAT_VERSION, "kind": self._KIND, "covered": int(covered),
                        "gen": gen, "next_seg_id": self._next_seg_id, "config": self._config(),
                        "segments": entries, **self._extra_files(folder, gen)}
            files.atomic_write_json(folder / MANIFEST, manifest)
        _remove_unreferenced(folder, manifest)

    @classmethod
    def _from_config(cls, config: dict) -> "InvertedIndex":
        return cls(**config)

    @classmethod
    def load(cls, folder) -> tuple["InvertedIndex", int]:
        """Open a saved index; returns (index, covered). Leftovers of an interrupted save are
        deleted."""
        folder = Path(folder)
        if not (folder / MANIFEST).exists():
            raise NotFoundError(f"no index manifest {folder / MANIFEST}; was save() called?")
        files.remove_stale_temps(folder)
        manifest = files.read_json(folder / MANIFEST)
        if manifest.get("kind") != cls._KIND:
            raise ValidationError(
                f"{folder} holds a {manifest.get('kind')!r} index, not {cls._KIND!r}")
        _remove_unreferenced(folder, manifest)
        idx = cls._from_config(manifest["config"])
        idx._gen = manifest["gen"]
        idx._next_seg_id = manifest["next_seg_id"]
        idx._load_extra(folder, manifest)
        for e in manifest["segments"]:
            arrays = files.read_arrays(folder / e["file"])
            live = np.array(files.read_npy(folder / e["live"]), np.uint8)
            idx._segments.append(segment_from_arrays(arrays, live, e["id"]))
        idx._recompute_stats()
        return idx, int(manifest["covered"])

    def _recompute_stats(self) -> None:
        n_terms = 1
        for s in self._segments:
            if len(s.terms):
                n_terms = max(n_terms, int(s.terms[-1]) + 1)
        self._df = np.zeros(max(n_terms, 1024) if self._TRACK_DF else 1024, np.int64)
        self._n_live = 0
        self._sum_len = 0.0
        self._stats_ver += 1
        for s in self._segments:
            counts = np.diff(s.doc_ptr)
            live_post = np.repeat(s.live != 0, counts)
            if self._TRACK_DF:
                self._df += np.bincount(s.fwd_term[live_post], minlength=len(self._df))
            self._n_live += s.n_live
            self._sum_len += float(s.doc_len[s.live != 0].astype(np.float64).sum())


def use_maxscore(n_docs: int, n_postings: int) -> bool:
    """The cost rule's choice for one segment (topk="auto"; `tune(topk=...)` forces one)."""
    return n_docs >= MAXSCORE_MIN_DOCS and n_postings >= MAXSCORE_MIN_POSTINGS_PER_DOC * n_docs


def _remove_unreferenced(folder: Path, manifest: dict) -> None:
    keep = {MANIFEST}
    for e in manifest["segments"]:
        keep.update((e["file"], e["live"]))
    keep.update(v for k, v in manifest.items() if k.endswith("_file"))
    for p in folder.iterdir():
        if p.is_file() and p.name not in keep and (p.name.startswith(("seg-", "live-", "vocab-"))
                                                  or p.name.endswith(files.TMP_SUFFIX)):
            p.unlink()
