"""Drift benchmark: a partition index kept fresh by LIRE vs fixed centroids vs full rebuilds.

Build on the rows of half the synth mixture's components, then stream the other half in 10
steps; each step also deletes 10% of the original rows. After every step, on the live rows:

  unidb-lire      the index updated in place (add + delete, background rebalancer, wait_idle)
  faiss-fixed     faiss IndexIVFFlat trained once on the initial rows (add / remove_ids)
  unidb-rebuild   PartitionIndex.build from scratch on the live rows

Reported per step: recall@10 at a fixed budget (unidb: FIXED_NPROBE partitions; faiss: the
nprobe scanning about as many vectors at step 0), one-query p50/p99 latency, posting length
p50/p99/max, rebalancer CPU seconds, insert throughput including rebalancing.

    .venv/bin/python bench/drift.py                  # synth 200k (100k-ish initial rows)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.configure_threads(1)

import numpy as np

from unidb import datasets
from unidb.evaluate import exact_knn, recall_at_k
from unidb.index.partition import PartitionIndex, PartitionOptions

K = 10
STEPS = 10
DELETE_FRACTION = 0.10       # of the original rows, per step
FIXED_NPROBE = 8             # the fixed search budget (partitions) for the unidb indexes
LATENCY_QUERIES = 300        # one-at-a-time queries timed per step for p50/p99


def latency(search_one, q) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, QPS) of one-query-at-a-time searches."""
    ts = []
    for i in range(min(LATENCY_QUERIES, len(q))):
        t0 = time.perf_counter()
        search_one(q[i])
        ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e3
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 99)), 1e3 / float(ts.mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--no-rebuild", action="store_true")
    ap.add_argument("--merge-threshold", type=int, default=None,
                    help="LIRE merge threshold (default: PartitionOptions' default)")
    args = ap.parse_args(argv)

    x = np.ascontiguousarray(datasets.synth(args.n))
    labels = np.asarray(datasets.synth_labels("base", args.n))
    q = np.ascontiguousarray(datasets.synth(datasets.SYNTH_SIZES["queries"], "queries"))
    old = np.flatnonzero(labels < datasets.SYNTH_K // 2)
    new = np.flatnonzero(labels >= datasets.SYNTH_K // 2)
    rng = np.random.default_rng(20251122)
    stream = np.array_split(new, STEPS)
    n_del = int(DELETE_FRACTION * len(old))
    del_order = rng.permutation(old)

    import faiss
    faiss.omp_set_num_threads(1)

    t0 = time.perf_counter()
    opts = PartitionOptions() if args.merge_threshold is None else \
        PartitionOptions(merge_threshold=args.merge_threshold)
    idx = PartitionIndex.build(old, x[old], "l2", opts)
    build_s = time.perf_counter() - t0
    idx.start_rebalancer()
    idx.search(q[:1], K)          # compile/load the search kernels before anything is timed
    idx.search(q[0], K)
    st0 = idx.stats()
    nlist = int(4 * np.sqrt(len(old)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(x.shape[1]), x.shape[1], nlist)
    ivf.train(x[old])
    ivf.add_with_ids(x[old], old.astype(np.int64))
    # same budget in scanned vectors at step 0
    faiss_nprobe = max(1, int(round(FIXED_NPROBE * st0["posting_len_p50"] / (len(old) / nlist))))
    print(f"initial rows {len(old):,}, streamed {len(new):,} in {STEPS} steps, "
          f"{n_del:,} deletions per step; unidb nprobe={FIXED_NPROBE}, faiss nlist={nlist} "
          f"nprobe={faiss_nprobe}", flush=True)

    live = np.zeros(args.n, dtype=bool)
    live[old] = True
    rows = []
    cpu_prev = 0.0
    for step in range(STEPS + 1):
        ins_rate = None
        if step > 0:
            add = stream[step - 1]
            gone = del_order[(step - 1) * n_del: step * n_del]
            t0 = time.perf_counter()
            idx.add(add, x[add])
            idx.delete(gone)
            idx.wait_idle()
            ins_rate = len(add) / (time.perf_counter() - t0)
            ivf.add_with_ids(x[add], add.astype(np.int64))
            ivf.remove_ids(faiss.IDSelectorBatch(gone.astype(np.int64)))
            live[add] = True
            live[gone] = False
        ids_live = np.flatnonzero(live)
        gt_local, _ = exact_knn(x[ids_live], q, K)
        gt = ids_live[gt_local]
        st = idx.stats()
        got, _ = idx.search(q, K, nprobe=FIXED_NPROBE)
        p50, p99, qps1 = latency(lambda v: idx.search(v, K, nprobe=FIXED_NPROBE), q)
        gotd, _ = idx.search(q, K)
        row = {"step": step, "live": int(live.sum()), "system": "unidb-lire",
               "recall": recall_at_k(got, gt, K), "recall_default": recall_at_k(gotd, gt, K),
               "p50_ms": p50, "p99_ms": p99, "qps_one": qps1,
               "postings": st["postings"], "len_p50": st["posting_len_p50"],
               "len_p99": st["posting_len_p99"], "len_max": st["posting_len_max"],
               "p99/p50": st["posting_len_p99"] / max(st["posting_len_p50"], 1),
               "splits": st["splits"], "merges": st["merges"], "moved": st["vectors_moved"],
               "rebal_cpu_s": st["rebalancer_cpu_seconds"] - cpu_prev, "insert_vps": ins_rate}
        cpu_prev = st["rebalancer_cpu_seconds"]
        rows.append(row)
        ivf.nprobe = faiss_nprobe
        _, fi = ivf.search(q, K)
        p50, p99, qps1 = latency(lambda v: ivf.search(v[None, :], K), q)
        rows.append({"step": step, "live": int(live.sum()), "system": "faiss-fixed",
                     "recall": recall_at_k(fi, gt, K), "p50_ms": p50, "p99_ms": p99, "qps_one": qps1})
        if not args.no_rebuild:
            t0 = time.perf_counter()
            rb = PartitionIndex.build(ids_live, x[ids_live], "l2", opts)
            rb_s = time.perf_counter() - t0
            rst = rb.stats()
            got, _ = rb.search(q, K, nprobe=FIXED_NPROBE)
            gotd, _ = rb.search(q, K)
            p50, p99, qps1 = latency(lambda v: rb.search(v, K, nprobe=FIXED_NPROBE), q)
            rows.append({"step": step, "live": int(live.sum()), "system": "unidb-rebuild",
                         "recall": recall_at_k(got, gt, K), "recall_default": recall_at_k(gotd, gt, K),
                         "p50_ms": p50, "p99_ms": p99, "qps_one": qps1,
                         "postings": rst["postings"], "len_p50": rst["posting_len_p50"],
                         "len_p99": rst["posting_len_p99"], "len_max": rst["posting_len_max"],
                         "p99/p50": rst["posting_len_p99"] / max(rst["posting_len_p50"], 1),
                         "build_s": rb_s})
            del rb        # free the rebuild before the next step's timed inserts
        _common.print_table(rows[-3:], ["step", "live", "system", "recall", "recall_default",
                                         "p50_ms", "p99_ms", "qps_one", "postings", "len_p50",
                                         "len_p99", "len_max", "splits", "merges", "moved",
                                         "rebal_cpu_s", "insert_vps", "build_s"])
    idx.stop_rebalancer()
    cols = ["step", "live", "system", "recall", "recall_default", "p50_ms", "p99_ms", "qps_one",
            "postings", "len_p50", "len_p99", "len_max", "p99/p50", "splits", "merges", "moved",
            "rebal_cpu_s", "insert_vps", "build_s"]
    _common.print_table(rows, cols, title=f"drift (synth {args.n:,}, fixed budget nprobe={FIXED_NPROBE})")
    out = _common.write_results("drift", {"n": args.n, "options": opts.to_dict(), "initial_build_s": build_s,
                                          "fixed_nprobe": FIXED_NPROBE, "faiss_nprobe": faiss_nprobe,
                                          "faiss_nlist": nlist, "rows": rows,
                                          "final_stats": idx.stats(),
                                          "peak_rss_mb": _common.peak_rss_mb()})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
