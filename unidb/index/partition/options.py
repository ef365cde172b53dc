"""Options of the partition index: every default is a named constant with its reason."""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace

from unidb.index.partition.postings import STORES
from unidb.index.partition.quantize import QUANTIZATIONS
from unidb.kernels.partition import LEN_MASK

# Build: ~100-300 vectors per posting is the sweet spot for an in-memory Python index
# (ALGORITHMS.md §2): long enough that one kernel call amortises its overhead, short enough
# that probing a few extra partitions for recall stays cheap. The default target (None) is
# max(TARGET_POSTING, sqrt(n) / TARGET_SQRT_DIV): 160 up to n = 410k, then growing like faiss's
# nlist = 4 sqrt(n) rule. Measured (docs/partition-index.md): 160 beat faiss IVFFlat at synth200k
# (1.01x one-query QPS at recall 0.95); at synth1m 160 gave 0.77x and 256 gave 0.89x.
TARGET_POSTING = 160
TARGET_SQRT_DIV = 4.0
# LIRE split limit: a posting longer than this is split in two (~MAX/2 each), so lengths stay
# within [~MAX/2 .. MAX] as they grow. Default (None) = MAX_POSTING_RATIO x target: 1.6 keeps
# the build's p99/median under 2 (synth200k: p50 131, p99 253 with 256; 320 gave 312 = 2.3x).
MAX_POSTING_RATIO = 1.6
# LIRE merge: a posting with this many valid entries or fewer is merged into a near posting
# whose combined size fits (SPFresh's MergeThreshold). Default (None) = MERGE_RATIO x max:
# postings then live in [0.35 max .. max], and the length distribution's p99/median stays under
# 2 while deletes hollow out old regions (bench/drift.py, synth200k: a fixed 10 left p99/median
# at 6 because postings shrank to 11 entries first; 0.3 reached 2.04, 0.35 peaks at 1.85).
MERGE_RATIO = 0.35
# Boundary replication (SPANN closure): at most this many copies of a vector (<= 8 in SPANN)...
REPLICAS = 4
# ...in partitions whose centroid is within (1 + EPS1) of the nearest one's distance.
EPS1 = 0.10
# Query-aware pruning: probe partition j only if d(q, c_j) <= (1 + EPS2) d(q, c_1) ...
EPS2 = 0.3
# ... and never more than this many partitions (the latency cap). Tuned for recall@10 >= 0.95
# with margin: 0.991 SIFT-small, 0.993 MNIST-9k, 0.998 synth200k at ~13/13/6 partitions probed
# on average (docs/partition-index.md); eps2=0.2 drops SIFT-small to 0.951.
MAX_PARTITIONS = 32
# LIRE reassignment scope: postings nearest to a split posting's old centroid whose vectors
# are checked for reassignment (SPFresh's ReassignK).
REASSIGN_K = 64
SEED = 20251122
# Posting store kind (postings.STORES): "memory" (numpy arena), "disk" (memory-mapped working
# files in the index folder), or a kind registered with postings.register_store.
STORAGE = "memory"
# First-pass codes of a search (quantize.py): None scans full float32 vectors; "sq8" scans
# per-dimension uint8 codes (1/4 of the bytes) and re-ranks exactly from the full vectors.
# Results are identical either way. None by default: in memory the codes come on top of the
# full vectors (+25% store bytes at 128-d) and batched search ran 0.74-1.11x; one-query search
# ran 0.80-1.59x, 1.03-1.56x at the default probe (docs/partition-index.md, "Compressed codes").
QUANTIZATION = None

# Validation bounds (validate()). Posting sizes: a posting's length is a LEN_BITS-bit field of
# the arena's slice table (kernels/partition.py), so no posting limit can exceed it.
POSTING_LIMIT = LEN_MASK
# eps1/eps2 are ratios of distances: beyond this every partition qualifies anyway, and
# (1 + eps)^2 stays far from float overflow (eps = 1e200 raised OverflowError at build).
EPS_LIMIT = 1e6
# Counts handed to numba kernels as int64 and to numpy as sizes: keep them machine-sized.
COUNT_LIMIT = 2 ** 31 - 1
SEED_LIMIT = 2 ** 63 - 1   # np.random.SeedSequence wants non-negative entropy; keep it int64
# name -> (kind, may be None, lowest, highest)
_RULES = {
    "target_posting": ("int", True, 2, POSTING_LIMIT),
    "max_posting": ("int", True, 2, POSTING_LIMIT),
    "merge_threshold": ("int", True, 0, POSTING_LIMIT),
    "replicas": ("int", False, 1, 8),             # SPANN's limit
    "eps1": ("float", False, 0.0, EPS_LIMIT),
    "eps2": ("float", False, 0.0, EPS_LIMIT),
    "max_partitions": ("int", False, 1, COUNT_LIMIT),
    "reassign_k": ("int", False, 1, COUNT_LIMIT),
    "seed": ("int", False, 0, SEED_LIMIT),
}


@dataclass
class PartitionOptions:
    target_posting: int | None = None     # None: max(TARGET_POSTING, sqrt(n)/TARGET_SQRT_DIV)
    max_posting: int | None = None        # None: MAX_POSTING_RATIO x target_posting
    merge_threshold: int | None = None   # None: MERGE_RATIO x max_posting
    replicas: int = REPLICAS
    eps1: float = EPS1
    eps2: float = EPS2
    max_partitions: int = MAX_PARTITIONS
    reassign_k: int = REASSIGN_K
    seed: int = SEED
    storage: str = STORAGE
    quantization: str | None = QUANTIZATION

    def __new__(cls, *args, **kwargs):
        # the generated __init__ would say "unexpected keyword argument"; name the valid ones
        unknown = sorted(set(kwargs) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; the partition index takes "
                            f"{[f.name for f in fields(cls)]}")
        return super().__new__(cls)

    def resolved(self, n: int) -> PartitionOptions:
        """A copy with target/max posting sizes fixed for an index of n vectors.

        Sizes left None are derived from those given, so that any valid set of options
        resolves: max_posting from target_posting (and at least 2 x merge_threshold), the
        default target no larger than a given max_posting."""
        m = self.max_posting
        t = self.target_posting
        if t is None:
            t = max(TARGET_POSTING, int(round(float(n) ** 0.5 / TARGET_SQRT_DIV)))
            if m is not None:
                t = min(t, m)
        if m is None:
            m = max(int(round(MAX_POSTING_RATIO * t)), 2 * (self.merge_threshold or 0))
        mt = self.merge_threshold
        if mt is None:
            mt = max(1, int(MERGE_RATIO * m))
        return replace(self, target_posting=int(t), max_posting=int(m),
                       merge_threshold=int(mt)).validate()

    def validate(self) -> PartitionOptions:
        """Check every option (type, range, consistency) and normalise numeric types to
        int / float; raises TypeError or ValueError naming the option and its value."""
        for name, (kind, nullable, lo, hi) in _RULES.items():
            v = getattr(self, name)
            if v is None and nullable:
                continue
            what = "an integer" if kind == "int" else "a finite number"
            ok_type = isinstance(v, numbers.Integral if kind == "int" else numbers.Real) \
                and not isinstance(v, bool)
            if not ok_type:
                raise TypeError(f"{name} must be {what}"
                                f"{' or None' if nullable else ''}, got {v!r} "
                                f"({type(v).__name__})")
            v = int(v) if kind == "int" else float(v)
            if not (lo <= v <= hi) or (kind == "float" and not math.isfinite(v)):
                bounds = f"[{lo}, {hi}]" if kind == "int" else f"[{lo:g}, {hi:g}]"
                raise ValueError(f"{name} must be {what} in {bounds}, "
                                 f"got {v!r}")
            setattr(self, name, v)
        if not isinstance(self.storage, str) or self.storage not in STORES:
            raise ValueError(f"storage must be one of {sorted(STORES)}, "
                             f"got {self.storage!r}")
        if not (self.quantization is None or (isinstance(self.quantization, str)
                                              and self.quantization in QUANTIZATIONS)):
            raise ValueError(f"quantization must be one of {list(QUANTIZATIONS)}, "
                             f"got {self.quantization!r}")
        if self.quantization is not None and not getattr(STORES[self.storage], "quantizes",
                                                         False):
            raise ValueError(f"storage {self.storage!r} does not support quantization "
                             f"{self.quantization!r}")
        t, m, mt = self.target_posting, self.max_posting, self.merge_threshold
        if m is not None and t is not None and m < t:
            raise ValueError(f"max_posting ({m}) must be >= target_posting ({t})")
        if m is not None and mt is not None and m < 2 * max(mt, 1):
            raise ValueError(f"max_posting ({m}) must be >= 2 * merge_threshold ({mt}): a "
                             f"split's halves would be merged at once")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
