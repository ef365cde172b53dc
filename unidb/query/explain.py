"""What a query did: the plan chosen and the counters that justify it (ALGORITHMS.md §1, item 4)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator


@dataclass
class Explain:
    """Plan and counters of one query; `print(explain)` for a summary, `.to_dict()` for JSON."""

    operator: str = "topk"              # topk | range | multivector | join
    plan: str = ""                      # flat-filtered | index-stream | scalar-driven | ...
    reason: str = ""                    # why the planner chose it
    rows_total: int = 0                 # live rows
    rows_matched: int = 0               # live rows passing the filter (exact count)
    k: int | None = None
    k_effective: int | None = None      # min(k, rows_matched): the row count guaranteed
    effective_k_prime: int = 0          # rows pulled from the access path before stopping (K')
    candidates_visited: int = 0         # rows yielded by the access path(s)
    distances_computed: int = 0         # distance evaluations, including exact finishing
    monotone_step: int | None = None    # scan step at which M(s) > R(s) first held
    E: int | None = None
    w: int | None = None
    stop_reason: str = ""               # filter-aware-stop | exhausted | all-matches-found | budget ...
    budget_exhausted: bool = False
    exact_finish_rows: int = 0          # matching rows scored exactly after the budget ran out
    rows_returned: int = 0
    stage_ms: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; repeated stages accumulate."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            ms = (time.perf_counter() - t0) * 1e3
            self.stage_ms[name] = self.stage_ms.get(name, 0.0) + ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        sel = self.rows_matched / self.rows_total if self.rows_total else 0.0
        lines = [
            f"{self.operator}: plan={self.plan}  ({self.reason})",
            f"  filter: {self.rows_matched:,} of {self.rows_total:,} live rows match ({sel:.2%})",
            f"  k={self.k} guaranteed={self.k_effective} returned={self.rows_returned}",
            f"  visited={self.candidates_visited:,} K'={self.effective_k_prime:,} "
            f"distances={self.distances_computed:,}",
            f"  monotone from step {self.monotone_step} (E={self.E}, w={self.w}); "
            f"stop: {self.stop_reason}"
            + (f"; budget exhausted, {self.exact_finish_rows:,} rows finished exactly"
               if self.budget_exhausted else ""),
            "  time: " + ", ".join(f"{k} {v:.2f} ms" for k, v in self.stage_ms.items()),
        ]
        if self.details:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in self.details.items()))
        return "\n".join(lines)
