"""Engine options (unidb/options.py): validation names the bad option; values round-trip."""
import math

import pytest

from unidb.errors import ValidationError
from unidb.options import DEFAULT, IndexOptions, Options, PlannerOptions, StorageOptions


def test_defaults_and_derived_sizes():
    o = Options.of(None)
    assert o is DEFAULT
    assert o.storage.small_bytes == o.storage.memtable_flush_bytes // 4
    assert o.storage.target_bytes == o.storage.memtable_flush_bytes * 4
    s = StorageOptions(memtable_flush_bytes=1000, compact_small_bytes=10)
    assert (s.small_bytes, s.target_bytes) == (10, 4000)


def test_dict_and_objects_round_trip():
    o = Options.of({"storage": {"memtable_flush_bytes": 4096},
                    "indexes": {"text_topk": "maxscore", "partition": {"replicas": 2}},
                    "planner": {"exact_max_cells": 0}})
    assert o.storage.memtable_flush_bytes == 4096
    assert o.indexes.partition["replicas"] == 2
    assert Options.of(o.to_dict()) == o
    assert Options.of(o) is o
    same = Options(storage=StorageOptions(memtable_flush_bytes=4096),
                   indexes=IndexOptions(text_topk="maxscore", partition={"replicas": 2}),
                   planner=PlannerOptions(exact_max_cells=0))
    assert same == o


def test_options_are_immutable():
    o = Options.of({"indexes": {"partition": {"replicas": 2}}})
    with pytest.raises(AttributeError):
        o.storage.memtable_flush_bytes = 1
    with pytest.raises(TypeError):
        o.indexes.partition["replicas"] = 3


@pytest.mark.parametrize("bad, words", [
    ({"storage": {"memtable_flush_bytes": 0}}, "storage.memtable_flush_bytes must be in"),
    ({"storage": {"memtable_flush_bytes": True}}, "must be a number"),
    ({"storage": {"memtable_flush_bytes": 1.5}}, "whole number"),
    ({"storage": {"compact_dead_ratio": math.nan}}, "must be finite"),
    ({"storage": {"compact_dead_ratio": 2}}, "compact_dead_ratio must be in"),
    ({"storage": {"compact_small_bytes": 100, "compact_target_bytes": 10}},
     "compact_target_bytes (10) must be at least compact_small_bytes (100)"),
    ({"storag": {}}, "unknown options section 'storag'"),
    ({"planner": {"bogus": 1}}, "unknown option planner.bogus"),
    ({"indexes": {"text_topk": "fast"}}, "text_topk must be one of"),
    ({"indexes": {"partition": ["replicas"]}}, "partition must be a dict"),
    ({"planner": {"budget_fraction": "0.3"}}, "must be a number"),
    ({"storage": 5}, "options storage must be a StorageOptions or a dict"),
    (7, "options must be a unidb.Options or a dict"),
])
def test_bad_options_name_the_problem(bad, words):
    with pytest.raises(ValidationError) as e:
        Options.of(bad)
    assert words in str(e.value)
