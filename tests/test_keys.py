"""The primary-key map (engine/keys.py) against a Python dict model.

Random sequences of add / upsert / delete / update / get / checkpoint / compact / reopen, with
a read-only reader following the writer, for Int64 and String keys; string keys also with the
hash narrowed to 3 bits, so that most keys collide and only the stored-key check tells them
apart. Small memtable chunks and flush sizes make the map's runs split, merge and move from the
memtable into segments all the time.
"""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

import unidb
from unidb.engine import keys as keys_module
from unidb.errors import ValidationError

OPTIONS = {"storage": {"memtable_flush_bytes": 2048, "memtable_chunk_rows": 4,
                       "compact_small_bytes": 1024, "compact_target_bytes": 8192}}
STEPS = 250


def int_key(i: int) -> int:
    # Negative, zero and extreme keys beside ordinary ones.
    return [i, -i - 1, 2**63 - 1 - i, -2**63 + i][i % 4]


def str_key(i: int) -> str:
    # Shared prefixes, an empty string, non-ASCII text.
    return ["", "k", "key-ä", "κλειδί"][i % 4] + str(i // 4) if i else ""


def schema(kind: str) -> dict:
    pk = unidb.Int64(primary_key=True) if kind == "int" else unidb.String(primary_key=True)
    return {"id": pk, "v": unidb.Int64()}


def check(t, model: dict, keyspace: list, rng: random.Random) -> None:
    assert len(t) == len(model)
    asked = rng.sample(keyspace, min(len(keyspace), rng.randint(1, 12)))
    asked += asked[:2]                                   # repeated keys come back repeated
    got = t.get(ids=asked).to_pylist()
    want = [{"id": k, "v": model[k]} for k in asked if k in model]
    assert got == want


def run_sequence(tmp_path, kind: str, seed: int) -> None:
    rng = random.Random(seed)
    make = int_key if kind == "int" else str_key
    keyspace = [make(i) for i in range(40)]
    path = str(tmp_path / f"{kind}-{seed}.unidb")
    db = unidb.connect(path, options=OPTIONS)
    t = db.create_table("t", schema(kind))
    reader = unidb.connect(path, read_only=True)
    rt = reader.open_table("t")
    model: dict = {}
    counter = 0
    for _ in range(STEPS):
        op = rng.choice(["add", "add", "upsert", "upsert", "delete", "update", "get",
                         "flush", "compact", "reopen", "reader"])
        counter += 1
        if op == "add":
            ks = rng.sample(keyspace, rng.randint(1, 5))
            rows = [{"id": k, "v": counter} for k in ks]
            dup = next((k for k in ks if k in model), None)
            if dup is not None:
                with pytest.raises(ValidationError, match="already exists"):
                    t.add(rows)
                # The whole batch is refused, the first existing key named.
                with pytest.raises(ValidationError) as e:
                    t.add(rows)
                assert repr(dup) in str(e.value)
            else:
                assert t.add(rows) == len(rows)
                model.update({k: counter for k in ks})
        elif op == "upsert":
            ks = rng.sample(keyspace, rng.randint(1, 6))
            got = t.upsert([{"id": k, "v": counter} for k in ks])
            updated = sum(k in model for k in ks)
            assert got == {"inserted": len(ks) - updated, "updated": updated}
            model.update({k: counter for k in ks})
        elif op == "delete":
            ks = rng.sample(keyspace, rng.randint(1, 6))
            assert t.delete(ids=ks) == sum(k in model for k in ks)
            for k in ks:
                model.pop(k, None)
        elif op == "update":
            limit = rng.randint(0, counter)
            n = t.update(where=f"v < {limit}", values={"v": counter})
            hit = [k for k, v in model.items() if v < limit]
            assert n == len(hit)
            model.update({k: counter for k in hit})
        elif op == "flush":
            t.flush()
        elif op == "compact":
            t.compact()
        elif op == "reopen":
            db.close()
            db = unidb.connect(path, options=OPTIONS)
            t = db.open_table("t")
        else:
            check(rt, model, keyspace, rng)              # the reader follows the writer
        check(t, model, keyspace, rng)
    check(rt, model, keyspace, rng)
    db.close()
    reader.close()
    db = unidb.connect(path)
    t = db.open_table("t")
    assert sorted(t.to_arrow().to_pylist(), key=lambda r: repr(r["id"])) == \
        sorted(({"id": k, "v": v} for k, v in model.items()), key=lambda r: repr(r["id"]))
    check(t, model, keyspace, rng)
    db.close()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["int", "string"])
def test_random_sequences_match_a_dict(tmp_path, kind, seed):
    run_sequence(tmp_path, kind, seed)


@pytest.mark.parametrize("seed", range(3))
def test_string_keys_with_colliding_hashes(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(keys_module, "STRING_HASH_BITS", 3)   # 8 hash values for 40 keys
    run_sequence(tmp_path, "string", seed)


def test_a_narrow_hash_makes_keys_collide(monkeypatch):
    monkeypatch.setattr(keys_module, "STRING_HASH_BITS", 1)
    km = keys_module.KeyMap("id", string_keys=True)
    codes = km.encode(pa.array([f"k{i}" for i in range(50)]))
    assert set(codes.tolist()) <= {0, 1} and len(set(codes.tolist())) == 2


def test_string_hash_is_stable_across_processes():
    """Readers hash as the writer does: the hash is FNV-1a + splitmix64, with no seed."""
    def reference(s: str) -> int:
        m = (1 << 64) - 1
        h = 0xCBF29CE484222325
        for b in s.encode():
            h = ((h ^ b) * 0x100000001B3) & m
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & m
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & m
        return h ^ (h >> 31)

    words = ["", "a", "key-ä", "κλειδί", "x" * 300]
    km = keys_module.KeyMap("id", string_keys=True)
    arr = pa.array(["pad"] + words).slice(1)                 # an offset into the buffers
    assert km.encode(arr).tolist() == [reference(w) for w in words]
    big = pa.array(words, type=pa.large_string())
    assert km.encode(big).tolist() == [reference(w) for w in words]


def test_many_memtable_chunks_and_one_large_batch(tmp_path):
    """Thousands of one-row writes (many memtable chunks, many merged runs) and then one
    batch of 20,000 keys: every lookup finds exactly the live row."""
    db = unidb.connect(str(tmp_path / "m.unidb"), durability="async",
                       options={"storage": {"memtable_chunk_rows": 16}})
    t = db.create_table("t", schema("int"))
    order = np.random.default_rng(1).permutation(3000)
    for i in order[:2000].tolist():
        t.add([{"id": i, "v": i}])
    t.add({"id": order[2000:], "v": order[2000:]})
    t.delete(ids=list(range(0, 3000, 3)))
    t.upsert({"id": np.arange(1, 3000, 3), "v": -np.arange(1, 3000, 3)})
    asked = np.random.default_rng(2).integers(-10, 3010, 20_000)
    got = t.get(ids=asked, columns=["id", "v"])
    want = [int(k) for k in asked if 0 <= k < 3000 and k % 3]
    assert got.column("id").to_pylist() == want
    assert got.column("v").to_pylist() == [-k if k % 3 == 1 else k for k in want]
    with pytest.raises(ValidationError, match="primary key 2 already exists"):
        t.add({"id": [5000, 2], "v": [0, 0]})
    assert t.add({"id": [0, 3], "v": [1, 1]}) == 2          # deleted keys can come back
    db.close()
