"""Options of the partition index: every default is a named constant with its reason."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

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
# Posting store: "memory" (numpy arena) or "disk" (memory-mapped working files in `folder`).
STORAGE = "memory"


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

    def resolved(self, n: int) -> PartitionOptions:
        """A copy with target/max posting sizes fixed for an index of n vectors."""
        t = self.target_posting
        if t is None:
            t = max(TARGET_POSTING, int(round(float(n) ** 0.5 / TARGET_SQRT_DIV)))
        m = self.max_posting if self.max_posting is not None else int(round(MAX_POSTING_RATIO * t))
        mt = self.merge_threshold
        if mt is None:
            mt = max(1, int(MERGE_RATIO * m))
        return replace(self, target_posting=int(t), max_posting=int(m),
                       merge_threshold=int(mt)).validate()

    def validate(self) -> PartitionOptions:
        if not 1 <= self.replicas <= 8:
            raise ValueError(f"replicas must be in 1..8 (SPANN's limit), got {self.replicas}")
        if self.target_posting is not None and self.target_posting < 2:
            raise ValueError(f"target_posting must be >= 2, got {self.target_posting}")
        # (None sizes are fixed by resolved(n) at build time)
        if self.merge_threshold is not None and self.merge_threshold < 0:
            raise ValueError(f"merge_threshold must be >= 0, got {self.merge_threshold}")
        if self.target_posting is not None and self.max_posting is not None and (
                self.max_posting < 2 * max(self.merge_threshold or 0, 1)
                or self.max_posting < self.target_posting):
            raise ValueError(f"max_posting ({self.max_posting}) must be >= target_posting "
                             f"({self.target_posting}) and >= 2 * merge_threshold ({self.merge_threshold})")
        if self.eps1 < 0 or self.eps2 < 0:
            raise ValueError(f"eps1/eps2 must be >= 0, got {self.eps1}/{self.eps2}")
        if self.max_partitions < 1 or self.reassign_k < 1:
            raise ValueError(f"max_partitions and reassign_k must be >= 1, got "
                             f"{self.max_partitions}/{self.reassign_k}")
        if self.storage not in ("memory", "disk"):
            raise ValueError(f"storage must be 'memory' or 'disk', got {self.storage!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
