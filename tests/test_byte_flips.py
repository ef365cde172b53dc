"""Byte flips in every kind of file unidb writes (issue #11 defect 5): detected or harmless.

A database with every file kind — catalog marker, MANIFEST, segments, tombstones, WAL with
records past the checkpoint, partition / sorted / text / sparse index snapshots, the server's
key store — is copied, one byte of one file is flipped, and the copy is opened and queried
through every access path. Each flip must either raise a `unidb.errors` error (a
`CorruptionError` naming the file, for the system of record), or give exactly the answers of
the undamaged database (a damaged index snapshot is rebuilt from the rows). Never a
different answer.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import unidb
from unidb.errors import AuthError, CorruptionError, UnidbError
from unidb.server.auth import KeyStore

DIM = 8
FLIPS_PER_FILE = 6


def _build(path):
    rng = np.random.default_rng(5)
    words = ["aspirin", "heart", "attack", "kettle", "lamp", "red", "blue", "green"]
    db = unidb.connect(path)
    t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
                              "title": unidb.Text(), "sv": unidb.SparseVector(),
                              "emb": unidb.Vector(DIM)})

    def rows(lo, hi):
        return [{"id": i, "price": float(rng.uniform(0, 100)),
                 "title": " ".join(rng.choice(words, 4)),
                 "sv": {int(k): float(rng.uniform(0.1, 2)) for k in rng.choice(50, 3, False)},
                 "emb": rng.standard_normal(DIM).astype(np.float32).tolist()}
                for i in range(lo, hi)]

    t.add(rows(0, 300))
    t.create_index("emb", kind="partition")
    t.create_index("price")
    t.delete(ids=list(range(0, 300, 7)))
    t.flush()                                        # segment + tombstones + index snapshots
    t.add(rows(300, 340))                            # WAL records past the checkpoint
    t.delete(ids=[301, 5])
    key = KeyStore(path).create("read")
    t._store.abandon()                               # crash: the WAL keeps the tail
    for tb in db._tables.values():
        tb._indexes.close(checkpoint=False)
    db._folder.close()
    return key


def _answers(path, key):
    """Everything a user could ask, as plain values."""
    db = unidb.connect(path)
    try:
        t = db.open_table("t")
        rows = sorted((r["id"], r["price"], r["title"]) for r in
                      t.to_arrow(columns=["id", "price", "title"]).to_pylist())
        every = max(t.index_stats("emb").get("postings", 1), 1)
        rng = np.random.default_rng(1)
        qs = rng.standard_normal((4, DIM)).astype(np.float32)
        vec = [[(h["id"], round(h["_distance"], 4)) for h in hs] for hs in
               t.search(qs).limit(10).params(nprobe=every).select(["id"]).to_list()]
        text = [(h["id"], round(h["_score"], 4)) for h in
                t.search(text="aspirin heart").limit(20).select(["id"]).to_list()]
        sparse = [(h["id"], round(h["_score"], 4)) for h in
                  t.search(sparse={3: 1.0, 17: 0.5}).limit(20).select(["id"]).to_list()]
        counts = (t.count(where="price < 30"), t.count(where="price BETWEEN 20 AND 60"),
                  t.count(where="MATCH(title, 'kettle')"), len(t))
        got = t.get([1, 2, 3, 301, 320], columns=["id", "price"]).to_pylist()
    finally:
        db.close()
    store = KeyStore(path)
    try:
        role = store.verify(key).role
    except AuthError:
        role = "rejected"
    return rows, vec, text, sparse, counts, got, role


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ("LOCK",
                                                                               "keys.lock"))


def test_every_file_kind_is_covered(tmp_path):
    src = tmp_path / "src.unidb"
    _build(src)
    names = {p.name for p in _files(src)}
    kinds = {"unidb.json", "MANIFEST.json", "keys.json", "partition-index.json", "sorted.json",
             "sorted.npz", "index.json"}
    assert kinds <= names, kinds - names
    for prefix in ("seg-", "tomb-", "wal-", "pidx-", "live-", "vocab-"):
        assert any(n.startswith(prefix) for n in names), prefix


def test_byte_flips_are_detected_or_harmless(tmp_path):
    src = tmp_path / "src.unidb"
    key = _build(src)
    expected = _answers(src, key)
    rng = np.random.default_rng(11)
    outcomes = {"detected": 0, "harmless": 0}
    detected_files = set()
    for f in _files(src):
        rel = f.relative_to(src)
        size = f.stat().st_size
        positions = sorted({0, size - 1, *rng.integers(0, size, FLIPS_PER_FILE - 2).tolist()})
        for pos in positions:
            dst = tmp_path / "flip.unidb"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
            data = bytearray((dst / rel).read_bytes())
            data[pos] ^= 1 << int(rng.integers(0, 8))
            (dst / rel).write_bytes(bytes(data))
            try:
                got = _answers(dst, key)
            except UnidbError as e:
                # The system of record says which file is damaged.
                assert isinstance(e, CorruptionError), (rel, pos, e)
                outcomes["detected"] += 1
                detected_files.add(rel.name)
                continue
            assert got == expected, f"flip at {rel}:{pos} changed an answer silently"
            outcomes["harmless"] += 1
    # Table files are the system of record: a flip in any of them is reported.
    assert any(n.startswith("seg-") for n in detected_files)
    assert any(n.startswith("tomb-") for n in detected_files)
    assert "MANIFEST.json" in detected_files and "unidb.json" in detected_files
    assert outcomes["detected"] > 0 and outcomes["harmless"] > 0


def test_manifest_checkpoint_lsn_off_by_one_is_detected(tmp_path):
    """Issue #11: `checkpoint_lsn + 1` in the MANIFEST silently skipped a WAL record."""
    src = tmp_path / "src.unidb"
    _build(src)
    man = next(src.rglob("MANIFEST.json"))
    text = man.read_text()
    import json
    d = json.loads(text)
    d["checkpoint_lsn"] += 1
    man.write_text(json.dumps(d))                    # same checksum member: now a mismatch
    _open_fails(src, "MANIFEST.json")
    # Even with a recomputed checksum the log and the manifest disagree.
    from unidb.storage import files
    d.pop("checksum")
    files.atomic_write_json(man, d)
    _open_fails(src, "checkpoint")


def _open_fails(path, match):
    db = unidb.connect(path)
    try:
        with pytest.raises(CorruptionError, match=match):
            db.open_table("t")
    finally:
        db.close()


def test_missing_files_are_corruption_naming_the_file(tmp_path):
    src = tmp_path / "src.unidb"
    _build(src)
    folder = src / "tables" / "t"
    for prefix in ("seg-", "tomb-", "wal-"):
        dst = tmp_path / f"missing-{prefix}unidb"
        shutil.copytree(src, dst)
        victim = next((dst / "tables" / "t").glob(prefix + "*"))
        victim.unlink()
        _open_fails(dst, victim.name)
    assert folder.exists()


def test_unidb_check_reports_damage(tmp_path):
    src = tmp_path / "src.unidb"
    _build(src)
    exe = [sys.executable, "-m", "unidb.cli", "check"]
    ok = subprocess.run([*exe, str(src)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 problems" in ok.stdout and "records past the checkpoint" in ok.stdout
    seg = next((src / "tables" / "t").glob("seg-*"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x10
    seg.write_bytes(bytes(data))
    bad = subprocess.run([*exe, str(src), "--json"], capture_output=True, text=True)
    assert bad.returncode == 1
    import json
    report = json.loads(bad.stdout)
    assert not report["ok"] and [p["file"] for p in report["problems"]] == [str(seg)]
    assert "checksum" in report["problems"][0]["problem"]


def test_manifest_with_a_renamed_key_is_corruption(tmp_path):
    """Issue #11 defect 14: a MANIFEST with a renamed key raised a raw TypeError. With its
    checksum recomputed (so only the field check can catch it) it is CorruptionError."""
    import json
    from unidb.storage import files
    src = tmp_path / "src.unidb"
    _build(src)
    man = next(src.rglob("MANIFEST.json"))
    d = json.loads(man.read_text())
    d.pop("checksum")
    d["segmentz"] = d.pop("segments")
    files.atomic_write_json(man, d)
    _open_fails(src, "segment")


def test_damaged_catalog_marker_is_corruption(tmp_path):
    """Issue #11 defect 14: a damaged unidb.json raised a raw JSONDecodeError."""
    src = tmp_path / "src.unidb"
    _build(src)
    (src / "unidb.json").write_bytes(b'{"format": "unidb-db/2"')
    with pytest.raises(CorruptionError, match="unidb.json"):
        unidb.connect(src)
