"""Prometheus metrics of `unidb serve`, in the text exposition format (no client library).

Counters and histograms are kept in memory per route template (never per raw path, so a
scan of random URLs cannot grow them without bound); table and index figures are read
from the database when /metrics is scraped.
"""
from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from typing import Any

# Seconds; spans a cached 1 ms search to a 10 s bulk load.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(**kv: Any) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in kv.items())
    return "{" + inner + "}" if inner else ""


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._rows_written: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route)
        with self._lock:
            self._requests[(method, route, status)] += 1
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = [0] * (len(LATENCY_BUCKETS) + 1)
            for i, edge in enumerate(LATENCY_BUCKETS):
                if seconds <= edge:
                    b[i] += 1
                    break
            else:
                b[-1] += 1
            self._sums[key] += seconds

    def rows_written(self, table: str, op: str, n: int) -> None:
        with self._lock:
            self._rows_written[(table, op)] += n

    def render(self, db: Any = None) -> str:
        """All metrics as Prometheus text (tables and indexes read from `db`)."""
        out: list[str] = []
        with self._lock:
            out += ["# HELP unidb_http_requests_total HTTP requests by route and status.",
                    "# TYPE unidb_http_requests_total counter"]
            for (m, r, s), n in sorted(self._requests.items()):
                out.append(f"unidb_http_requests_total{_labels(method=m, route=r, status=s)} {n}")
            out += ["# HELP unidb_http_request_seconds Request latency by route.",
                    "# TYPE unidb_http_request_seconds histogram"]
            for (m, r), b in sorted(self._buckets.items()):
                acc = 0
                for edge, n in zip((*LATENCY_BUCKETS, math.inf), b):
                    acc += n
                    le = "+Inf" if edge == math.inf else repr(edge)
                    out.append(f"unidb_http_request_seconds_bucket"
                               f"{_labels(method=m, route=r, le=le)} {acc}")
                out.append(f"unidb_http_request_seconds_sum{_labels(method=m, route=r)} "
                           f"{self._sums[(m, r)]:.6f}")
                out.append(f"unidb_http_request_seconds_count{_labels(method=m, route=r)} {acc}")
            out += ["# HELP unidb_rows_written_total Rows acknowledged by write operation.",
                    "# TYPE unidb_rows_written_total counter"]
            for (t, op), n in sorted(self._rows_written.items()):
                out.append(f"unidb_rows_written_total{_labels(table=t, op=op)} {n}")
        out += ["# HELP unidb_uptime_seconds Seconds since the server started.",
                "# TYPE unidb_uptime_seconds gauge",
                f"unidb_uptime_seconds {time.time() - self.started:.3f}"]
        if db is not None:
            out += _table_metrics(db)
        return "\n".join(out) + "\n"


def _table_metrics(db: Any) -> list[str]:
    rows = ["# HELP unidb_table_rows Live rows per table.", "# TYPE unidb_table_rows gauge"]
    disk = ["# HELP unidb_table_disk_bytes Bytes on disk per table.",
            "# TYPE unidb_table_disk_bytes gauge"]
    idx = ["# HELP unidb_index_stat Numeric index statistics (index_stats) per column.",
           "# TYPE unidb_index_stat gauge"]
    for name in db.table_names():
        try:
            t = db.open_table(name)
            rows.append(f"unidb_table_rows{_labels(table=name)} {len(t)}")
            disk.append(f"unidb_table_disk_bytes{_labels(table=name)} "
                        f"{t.stats().get('disk_bytes', 0)}")
            for column in t.list_indexes():
                try:
                    stats = t.index_stats(column)
                except Exception:  # noqa: BLE001 - an index without stats is not an error
                    continue
                for stat, value in _numeric_items(stats):
                    idx.append(f"unidb_index_stat{_labels(table=name, column=column, stat=stat)}"
                               f" {value}")
        except Exception:  # noqa: BLE001 - a table dropped mid-scrape
            continue
    return rows + disk + idx


def _numeric_items(d: Any, prefix: str = "") -> list[tuple[str, float]]:
    out = []
    if hasattr(d, "item") and not isinstance(d, (dict, list)):
        try:
            d = d.item()                          # numpy scalars
        except (TypeError, ValueError):
            return out
    if isinstance(d, dict):
        for k, v in d.items():
            out += _numeric_items(v, f"{prefix}{k}" if not prefix else f"{prefix}_{k}")
    elif isinstance(d, bool):
        out.append((prefix, int(d)))
    elif isinstance(d, (int, float)) and math.isfinite(d):
        out.append((prefix, d))
    return out
