"""Shared benchmark harness: thread settings, timing, memory, result files, tables, curves.

Rules (../shared/design/BENCHMARKS.md): medians of >= 3 repetitions next to the baseline in the
same run; single-threaded unless a table says otherwise; record thread settings in the JSON.

Threads must be fixed before numpy, faiss or numba load their thread pools, so a script starts::

    import _common
    _common.configure_threads(1)     # first, before numpy / faiss / unidb are imported
    import numpy as np

`configure_threads` also sets OMP_WAIT_POLICY=PASSIVE: on these 2-core machines OpenMP's
default spin-wait has made 2-thread faiss calls 2-15x slower than 1-thread ones. This module
imports numpy lazily so that importing it does not defeat the above.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_REPEATS = 3          # BENCHMARKS.md: medians of at least 3 repetitions
# A recall averaged in floating point can land a hair under a target it met exactly
# (0.95 as 0.9499999999999999); this absorbs rounding only, never a real shortfall.
RECALL_EPS = 1e-9
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")
WAIT_POLICY_VAR = "OMP_WAIT_POLICY"
# Libraries whose thread pools read the variables above when first imported.
_POOL_MODULES = ("numpy", "faiss", "numba", "hnswlib", "torch")
# Packages whose versions go into every result file (read from metadata, never imported).
VERSIONED_PACKAGES = ("numpy", "pyarrow", "numba", "faiss-cpu", "hnswlib", "bm25s", "pandas",
                      "pyroaring", "unidb")


# ------------------------------------------------------------------------------- threads


def configure_threads(n: int = 1) -> None:
    """Pin OpenMP/BLAS/numba pools to n threads and OMP_WAIT_POLICY=PASSIVE; call before
    numpy/faiss/numba are imported (it warns when one already is)."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    os.environ.setdefault(WAIT_POLICY_VAR, "PASSIVE")
    loaded = [m for m in _POOL_MODULES if m in sys.modules]
    if loaded:
        warnings.warn(f"configure_threads({n}) called after {', '.join(loaded)} was imported; "
                      "their thread pools may ignore it: call it first in the script",
                      RuntimeWarning, stacklevel=2)


def thread_env() -> dict[str, Any]:
    """Thread settings in force: the env variables, plus pool sizes of libraries already loaded."""
    env: dict[str, Any] = {var: os.environ.get(var) for var in (*THREAD_ENV_VARS, WAIT_POLICY_VAR)}
    # Only ask libraries that are already loaded: importing one here would start its pool.
    if "numba" in sys.modules:
        try:
            env["numba_threads"] = sys.modules["numba"].get_num_threads()
        except Exception:  # noqa: BLE001 - numba without a threading layer
            env["numba_threads"] = None
    if "faiss" in sys.modules:
        env["faiss_omp_max_threads"] = sys.modules["faiss"].omp_get_max_threads()
    if "numpy" in sys.modules:
        env["numpy_blas"] = _numpy_blas()
    return env


def _numpy_blas() -> str | None:
    """Name and version of numpy's BLAS, from its build config (no computation)."""
    try:
        cfg = sys.modules["numpy"].show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:  # noqa: BLE001 - older numpy: no dict mode
        return None


# -------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Wall-clock seconds of repeated runs of one callable."""

    median: float
    times: list[float]
    result: Any = None       # what the last run returned

    @property
    def best(self) -> float:
        return min(self.times)


def time_repeated(fn: Callable[[], Any], repeats: int = DEFAULT_REPEATS, warmup: int = 0
                  ) -> Timing:
    """Run fn `warmup` times untimed, then `repeats` times timed; median and all times."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), times, result)


def qps(n_queries: int, seconds: float) -> float:
    """Queries per second; inf for a zero duration."""
    return n_queries / seconds if seconds > 0 else math.inf


# -------------------------------------------------------------------------------- memory


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (getrusage ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def current_rss_mb() -> float | None:
    """Resident memory now, MiB (psutil, else /proc/self/statm; None if neither)."""
    try:
        import psutil
        return psutil.Process().memory_info().rss / (1024 * 1024)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return None


def dir_size_mb(path: str | os.PathLike) -> float:
    """Bytes on disk under a folder (or one file), MiB."""
    p = Path(path)
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / (1024 * 1024)


# ------------------------------------------------------------------------------- results


def machine_info() -> dict[str, Any]:
    """CPU, memory, OS, Python and package versions of this machine."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import psutil
        info["memory_gb"] = round(psutil.virtual_memory().total / 1024 ** 3, 1)
    except ImportError:
        pass
    versions = {}
    for pkg in VERSIONED_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    info["versions"] = versions
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays, paths and dataclass-like objects as plain JSON values."""
    if hasattr(obj, "tolist"):          # numpy scalar or array
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dict__"):
        return vars(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable: convert it in the payload")


def write_results(name: str, payload: Mapping[str, Any], results_dir: Path | None = None) -> Path:
    """Write payload plus a `meta` block (machine, threads, time, argv) to
    bench/results/<name>-<UTC timestamp>.json; return the path."""
    if "meta" in payload:
        raise ValueError("payload key 'meta' is reserved for the machine and thread record")
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    doc = {"meta": {"name": name, "created_utc": now.isoformat(timespec="seconds"),
                    "argv": sys.argv, "machine": machine_info(), "threads": thread_env()},
           **payload}
    path = folder / f"{name}-{stamp}.json"
    suffix = 1
    while path.exists():                 # two runs in the same second keep both files
        path = folder / f"{name}-{stamp}-{suffix}.json"
        suffix += 1
    path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return path


# -------------------------------------------------------------------------------- tables


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(value, int) or type(value).__name__.startswith("int"):
        return f"{int(value):,}"
    return str(value)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str = "",
                file: Any = None) -> str:
    """Print rows as a fixed-width table (numbers right-aligned, missing cells '-'); return it."""
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    numeric = [all(_is_number(row.get(col)) for row in rows if row.get(col) is not None)
               for col in columns]
    widths = [max([len(col)] + [len(r[j]) for r in cells]) for j, col in enumerate(columns)]

    def fmt(values: Iterable[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    lines = [title] if title else []
    lines += [fmt(columns), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    text = "\n".join(lines)
    print(text, file=file if file is not None else sys.stdout, flush=True)
    return text


def _is_number(value: Any) -> bool:
    return not isinstance(value, (str, bool)) and (isinstance(value, (int, float))
                                                   or hasattr(value, "dtype"))


# -------------------------------------------------------------------------------- curves


def qps_at_recall(curve: Iterable[tuple[float, float] | Mapping[str, float]], target: float
                  ) -> float | None:
    """QPS of the FIRST sweep point (in sweep order) whose recall reaches target; no
    interpolation; None if no point does. Points are (recall, qps) or {"recall", "qps"}."""
    for point in curve:
        recall, q = ((point["recall"], point["qps"]) if isinstance(point, Mapping) else point)
        if recall >= target - RECALL_EPS:
            return float(q)
    return None


# ------------------------------------------------------------------------ baseline trees


def run_against_baseline(script: Path, child_args: Callable[[int], list[str]], baseline: str,
                         repeats: int) -> dict[str, list[dict]]:
    """Run `script --child ...` against this checkout and a git worktree of `baseline`,
    alternating (noise hits both alike), each run a fresh process whose last stdout line is a
    JSON object. Round -1 warms numba's per-tree cache and is not kept. Returns
    {"baseline": [...], "current": [...]}."""
    import shutil
    import subprocess
    import tempfile
    repo = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="unidb-ab-"))
    base_tree = work / "baseline"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-q",
                    str(base_tree), baseline], check=True)
    trees = {"baseline": base_tree, "current": repo}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    try:
        for rep in range(-1, repeats):
            for name, tree in trees.items():
                env = dict(os.environ, PYTHONPATH=str(tree))
                env.setdefault("UNIDB_DATA", str(repo.parent / "shared" / "data"))
                res = subprocess.run([sys.executable, str(script), "--child",
                                      *child_args(rep)], env=env, cwd=work, check=True,
                                     capture_output=True, text=True)
                if rep >= 0:
                    runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force",
                        str(base_tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return runs


def ab_table(runs: Mapping[str, list[dict]], keys: Sequence[str]) -> list[dict]:
    """Rows of median baseline, median current and their ratio for each key."""
    rows = []
    for key in keys:
        b = statistics.median(r[key] for r in runs["baseline"])
        c = statistics.median(r[key] for r in runs["current"])
        rows.append({"measure": key, "baseline": round(b, 4), "current": round(c, 4),
                     "ratio": round(c / b, 2) if b else None})
    return rows

