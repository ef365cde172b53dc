"""Engine options: the tunables of storage, index maintenance and the query planner.

One immutable `Options` value per open database, passed as `unidb.connect(path, options=...)`
(an `Options`, or a dict of sections: `{"storage": {"memtable_flush_bytes": 8 << 20}}`).
Every handle of a database shares its engine, so every handle shares its options: a second
`connect` with different options is refused while the first handle is open.

Each default is the value the engine was tuned with; the reason is next to it. Options are
not stored in the database: they tune how this process writes and plans, never what the files
mean, so a database written under one set opens under any other.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Mapping

from unidb.errors import ValidationError

TOPK_ALGORITHMS = ("auto", "maxscore", "exhaustive")
COUNT_LIMIT = 2 ** 62


@dataclass(frozen=True)
class StorageOptions:
    """How a table turns writes into files (storage/table_store.py)."""
    # The in-memory tail of rows written since the last checkpoint; past this many bytes a
    # checkpoint writes it out as a segment. 64 MiB keeps a checkpoint under a second on this
    # project's reference VM while a WAL replay after kill -9 stays bounded by the same size.
    memtable_flush_bytes: int = 64 << 20
    # Rows per Arrow chunk of the memtable: one chunk per small write would make scans slow.
    memtable_chunk_rows: int = 8192
    # Compaction rewrites a segment whose dead rows (deleted or updated) exceed this fraction.
    compact_dead_ratio: float = 0.2
    # Segments below this size are merged with their neighbours (None: flush size / 4) ...
    compact_small_bytes: int | None = None
    # ... into segments of about this size (None: flush size x 4).
    compact_target_bytes: int | None = None
    # durability="async": the log is fsynced at most this long after a write.
    async_fsync_seconds: float = 1.0
    # A background checkpoint that failed (full disk, I/O error) is retried after this delay.
    retry_after_failure_seconds: float = 5.0

    @property
    def small_bytes(self) -> int:
        return (self.memtable_flush_bytes // 4 if self.compact_small_bytes is None
                else self.compact_small_bytes)

    @property
    def target_bytes(self) -> int:
        return (self.memtable_flush_bytes * 4 if self.compact_target_bytes is None
                else self.compact_target_bytes)


@dataclass(frozen=True)
class IndexOptions:
    """How indexes are maintained (engine/indexes.py, index/sparse/inverted.py)."""
    # A writer saves an index snapshot at a checkpoint once this many rows changed since the
    # last one (or the fraction below of the index): reopening then replays only the rest.
    save_min_changes: int = 50_000
    save_min_fraction: float = 0.2
    # Text and sparse indexes: buffered documents sealed into an immutable segment (freezing
    # the buffer for a query costs O(buffer), so it stays small next to sealed segments) ...
    text_buffer_docs: int = 4096
    # ... and more segments than this trigger a merge of the smallest few.
    text_max_segments: int = 8
    # Top-k algorithm per segment: "auto" picks by cost (MaxScore with block-max bounds on
    # large segments, exhaustive term-at-a-time on small ones); the others force one.
    text_topk: str = "auto"
    # A broken index (its feed and its rebuild both failed) is rebuilt again at a write at
    # most this often: each try reads every row of the column, and the cause (memory, a bug)
    # rarely clears within seconds.
    rebuild_retry_seconds: float = 5.0
    # Defaults for create_index(kind="partition") options not given at the call, e.g.
    # {"replicas": 2, "max_partitions": 64}; checked like the call's own options.
    partition: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "partition", MappingProxyType(dict(self.partition)))


@dataclass(frozen=True)
class PlannerOptions:
    """The cost thresholds of filtered and range search (query/plan.py, query/operators.py)."""
    # Matching rows x dimension under which the planner scores the matching rows exactly
    # instead of walking the index (bench/filtered.py crossover: 2^21 cells = 16,384 rows at
    # 128-d, 2,675 at MNIST's 784-d).
    exact_max_cells: int = 1 << 21
    # A range predicate on an indexed scalar column drives the plan when it selects at most
    # this fraction of the live rows (read them from the sorted index, check the rest there).
    scalar_drive_selectivity: float = 0.01
    # Post-filtering (one index search for k / selectivity x oversample rows, then the filter)
    # is tried for filters keeping at least this fraction of the rows ...
    postfilter_min_selectivity: float = 0.1
    postfilter_oversample: int = 4
    # ... and never asks the index for more than this many rows.
    postfilter_max_k: int = 4_000
    # Rows a streaming operator may pull from an index before it finishes exactly over the
    # matching rows it has not seen: max(budget_min_rows, budget_fraction x live rows).
    budget_fraction: float = 0.3
    budget_min_rows: int = 20_000


# name -> (kind, may be None, lowest, highest); "choice" rules carry the allowed values.
_RULES: dict[str, tuple] = {
    "memtable_flush_bytes": ("int", False, 1, COUNT_LIMIT),
    "memtable_chunk_rows": ("int", False, 1, COUNT_LIMIT),
    "compact_dead_ratio": ("float", False, 0.0, 1.0),
    "compact_small_bytes": ("int", True, 0, COUNT_LIMIT),
    "compact_target_bytes": ("int", True, 1, COUNT_LIMIT),
    "async_fsync_seconds": ("float", False, 0.001, 3600.0),
    "retry_after_failure_seconds": ("float", False, 0.0, 86400.0),
    "save_min_changes": ("int", False, 1, COUNT_LIMIT),
    "save_min_fraction": ("float", False, 0.0, 1e6),
    "text_buffer_docs": ("int", False, 1, COUNT_LIMIT),
    "text_max_segments": ("int", False, 1, 1 << 16),
    "text_topk": ("choice", TOPK_ALGORITHMS),
    "rebuild_retry_seconds": ("float", False, 0.0, 86400.0),
    "partition": ("mapping",),
    "exact_max_cells": ("int", False, 0, COUNT_LIMIT),
    "scalar_drive_selectivity": ("float", False, 0.0, 1.0),
    "postfilter_min_selectivity": ("float", False, 0.0, 1.0),
    "postfilter_oversample": ("int", False, 1, 1 << 20),
    "postfilter_max_k": ("int", False, 1, COUNT_LIMIT),
    "budget_fraction": ("float", False, 0.0, 1.0),
    "budget_min_rows": ("int", False, 0, COUNT_LIMIT),
}


def _check(section: str, name: str, value: Any) -> Any:
    rule = _RULES[name]
    where = f"options {section}.{name}"
    if rule[0] == "choice":
        if value not in rule[1]:
            raise ValidationError(f"{where} must be one of {rule[1]}, got {value!r}")
        return value
    if rule[0] == "mapping":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValidationError(f"{where} must be a dict of option names to values, "
                                  f"got {value!r}")
        return value
    kind, nullable, lo, hi = rule
    if value is None:
        if nullable:
            return None
        raise ValidationError(f"{where} must be set, got None")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(f"{where} must be a number, got {value!r}")
    if kind == "int":
        if not isinstance(value, numbers.Integral):
            raise ValidationError(f"{where} must be a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValidationError(f"{where} must be finite, got {value!r}")
    if not lo <= value <= hi:
        raise ValidationError(f"{where} must be in [{lo}, {hi}], got {value!r}")
    return value


_SECTIONS = {"storage": StorageOptions, "indexes": IndexOptions, "planner": PlannerOptions}


def _section(name: str, value: Any):
    cls = _SECTIONS[name]
    if isinstance(value, cls):
        given = {f.name: getattr(value, f.name) for f in fields(cls)}
    elif isinstance(value, Mapping):
        given = dict(value)
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(known), key=str)
        if unknown:
            raise ValidationError(f"unknown option {name}.{unknown[0]}; the {name} options "
                                  f"are {', '.join(known)}")
    else:
        raise ValidationError(f"options {name} must be a {cls.__name__} or a dict, "
                              f"got {type(value).__name__}")
    checked = {k: _check(name, k, v) for k, v in given.items()}
    out = cls(**checked) if not isinstance(value, cls) else replace(value, **checked)
    if isinstance(out, StorageOptions) and out.target_bytes < out.small_bytes:
        raise ValidationError(f"options storage.compact_target_bytes ({out.target_bytes}) must "
                              f"be at least compact_small_bytes ({out.small_bytes})")
    return out


@dataclass(frozen=True)
class Options:
    """All engine options; `Options.of(value)` accepts an Options, a dict of sections or None."""
    storage: StorageOptions = field(default_factory=StorageOptions)
    indexes: IndexOptions = field(default_factory=IndexOptions)
    planner: PlannerOptions = field(default_factory=PlannerOptions)

    def __post_init__(self):
        for name in _SECTIONS:
            object.__setattr__(self, name, _section(name, getattr(self, name)))

    @classmethod
    def of(cls, value: "Options | Mapping[str, Any] | None") -> "Options":
        if value is None:
            return DEFAULT
        if isinstance(value, Options):
            return value
        if not isinstance(value, Mapping):
            raise ValidationError(f"options must be a unidb.Options or a dict of sections "
                                  f"({', '.join(_SECTIONS)}), got {type(value).__name__}")
        unknown = sorted(set(value) - set(_SECTIONS), key=str)
        if unknown:
            raise ValidationError(f"unknown options section {unknown[0]!r}; the sections are "
                                  f"{', '.join(_SECTIONS)}")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {name: {f.name: getattr(getattr(self, name), f.name)
                      for f in fields(_SECTIONS[name])} for name in _SECTIONS}
        out["indexes"]["partition"] = dict(self.indexes.partition)
        return out

    def differences(self, other: "Options") -> list[str]:
        """'section.name: mine / theirs' for every option whose values differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{sec}.{k}: {v!r} / {theirs[sec][k]!r}"
                for sec in mine for k, v in mine[sec].items() if theirs[sec][k] != v]


DEFAULT = Options()
