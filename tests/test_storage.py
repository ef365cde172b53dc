"""Storage: WAL torn tails and corruption, recovery, checkpoints, compaction, orphans, locks."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import unidb
from unidb.errors import CorruptionError, LockedError, ReadOnlyError
from unidb.storage.manifest import read_manifest
from unidb.storage.wal import FILE_HEADER_SIZE, RECORD_HEADER_SIZE, WalWriter, read_wal

from conftest import REPO, items_rows, items_schema


def test_wal_roundtrip_and_torn_tail(tmp_path):
    p = tmp_path / "w.log"
    w = WalWriter(p, first_lsn=1, create=True)
    for i in range(1, 6):
        w.append(i, bytes([i]) * (100 * i))
    w.close()
    first, recs = read_wal(p, repair=False)
    assert first == 1 and [r.lsn for r in recs] == [1, 2, 3, 4, 5]
    full = p.stat().st_size
    # Cut the last record in half: a torn tail is dropped (and truncated when repairing).
    with open(p, "r+b") as f:
        f.truncate(full - 200)
    _, recs = read_wal(p, repair=False)
    assert [r.lsn for r in recs] == [1, 2, 3, 4]
    assert p.stat().st_size == full - 200          # read-only readers never modify
    _, recs = read_wal(p, repair=True)
    assert [r.lsn for r in recs] == [1, 2, 3, 4]
    assert p.stat().st_size == recs[-1].offset + RECORD_HEADER_SIZE + 400
    # A header cut short is also a torn tail.
    with open(p, "ab") as f:
        f.write(b"\x01\x02\x03")
    _, recs = read_wal(p, repair=True)
    assert len(recs) == 4


def test_wal_only_an_incomplete_last_record_is_a_torn_tail(tmp_path):
    p = tmp_path / "w.log"
    w = WalWriter(p, first_lsn=1, create=True)
    for i in range(1, 4):
        w.append(i, b"x" * 50)
    w.close()
    _, recs = read_wal(p, repair=False)
    clean = p.read_bytes()
    # A complete last record that fails its checksum is damage, not a torn write.
    data = bytearray(clean)
    data[recs[2].offset + 30] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=f"offset {recs[2].offset}"):
        read_wal(p, repair=False)
    # The same record whose bytes were allocated but never written (zeros) is a torn tail.
    data = bytearray(clean)
    data[recs[2].offset:] = bytes(len(data) - recs[2].offset)
    p.write_bytes(bytes(data))
    _, got = read_wal(p, repair=False)
    assert len(got) == 2
    # A middle record's damage is corruption, naming file and offset.
    data = bytearray(clean)
    data[recs[1].offset + 30] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as e:
        read_wal(p, repair=True)
    assert str(p) in str(e.value) and f"offset {recs[1].offset}" in str(e.value)
    assert p.read_bytes() == bytes(data)             # nothing truncated


def test_wal_length_damaged_before_the_tail_is_corruption_not_a_torn_tail(tmp_path):
    """Issue #11 defect 4: a middle record's length pointing past the end dropped every later
    record (80 rows lost, no error)."""
    p = tmp_path / "w.log"
    w = WalWriter(p, first_lsn=1, create=True)
    for i in range(1, 6):
        w.append(i, b"y" * 64)
    w.close()
    _, recs = read_wal(p, repair=False)
    for byte in range(4):                            # every byte of the length field
        data = bytearray(p.read_bytes())
        data[recs[1].offset + byte] ^= 0x40
        q = tmp_path / f"w{byte}.log"
        q.write_bytes(bytes(data))
        with pytest.raises(CorruptionError, match=f"offset {recs[1].offset}"):
            read_wal(q, repair=True)
        assert q.read_bytes() == bytes(data)


def test_corrupt_wal_record_in_table_names_file_and_offset(db_path):
    db = unidb.connect(db_path)
    t = db.create_table("t", items_schema())
    for i in range(3):
        t.add(items_rows(10, start=10 * i))
    folder = t._store.folder
    wal = folder / t._store.manifest.wal
    t._store.abandon()                               # crash: no checkpoint
    db._folder.close()
    data = bytearray(wal.read_bytes())
    data[FILE_HEADER_SIZE + 40] ^= 0xFF             # inside the first record's payload
    wal.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=r"offset \d+"):
        unidb.connect(db_path).open_table("t")


def test_recovery_replays_wal_without_checkpoint(db_path):
    db = unidb.connect(db_path)
    t = db.create_table("t", items_schema())
    t.add(items_rows(30))
    t.delete(ids=[1, 2])
    t.upsert([{**{k: v[0] for k, v in items_rows(1, start=5, seed=9).items()}}])
    expect = t.to_arrow().sort_by("id")
    t._store.abandon()
    db._folder.close()
    db2 = unidb.connect(db_path)
    t2 = db2.open_table("t")
    assert t2.to_arrow().sort_by("id").equals(expect)
    assert len(t2) == 28
    db2.close()


def test_checkpoint_segments_and_compaction(db_path, monkeypatch):
    db = unidb.connect(db_path, options={"storage": {
        "memtable_flush_bytes": 20_000,
        "compact_small_bytes": 1}})                  # only dead-ratio compaction
    t = db.create_table("t", items_schema())
    for i in range(10):
        t.add(items_rows(100, start=100 * i, seed=i))
    m = t._store.manifest
    assert len(m.segments) >= 3 and m.checkpoint_lsn > 0
    t.delete(where="id < 500")
    t.compact()
    assert len(t) == 500
    state = t._state()
    assert sum(p.num_rows for p in state.parts) < 1000      # dead rows physically dropped
    expect = t.to_arrow().sort_by("id")
    db.close()
    names = {p.name for p in (db_path / "tables" / "t").iterdir()}
    m = read_manifest(db_path / "tables" / "t")
    assert {n for n in names if n.startswith("seg-")} == set(m.segments)
    assert {n for n in names if n.startswith("wal-")} == {m.wal}
    db = unidb.connect(db_path)
    assert db.open_table("t").to_arrow().sort_by("id").equals(expect)
    db.close()


def test_orphans_from_interrupted_flush_are_removed(db_path):
    db = unidb.connect(db_path)
    t = db.create_table("t", items_schema())
    t.add(items_rows(10))
    folder = t._store.folder
    db.close()
    (folder / "seg-999999.arrow").write_bytes(b"half written")
    (folder / "MANIFEST.json.tmp").write_bytes(b"{")
    db = unidb.connect(db_path)
    assert len(db.open_table("t")) == 10
    assert not (folder / "seg-999999.arrow").exists()
    assert not (folder / "MANIFEST.json.tmp").exists()
    db.close()


def test_drop_and_recreate(db):
    t = db.create_table("t", items_schema())
    t.add(items_rows(5))
    db.drop_table("t")
    assert db.table_names() == []
    t = db.create_table("t", items_schema())
    assert len(t) == 0


WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    sys.path.insert(0, {tests!r})
    import unidb
    from conftest import items_rows, items_schema
    db = unidb.connect({path!r})
    t = db.open_table("t") if "t" in db.table_names() else db.create_table("t", items_schema())
    print("READY", flush=True)
    i = 0
    while True:
        t.add(items_rows(50, start=1000 + 50 * i, seed=i))
        print("ACK", i, flush=True)
        i += 1
        time.sleep(0.01)
""")


def _spawn_writer(db_path):
    code = WRITER.format(tests=str(REPO / "tests"), path=str(db_path))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "READY"
    return p


def test_second_writer_gets_locked_error_and_reader_reads_alongside(db_path):
    db = unidb.connect(db_path)
    db.create_table("t", items_schema()).add(items_rows(10))
    db.close()
    p = _spawn_writer(db_path)
    try:
        with pytest.raises(LockedError) as e:
            unidb.connect(db_path)
        assert e.value.pid == p.pid and str(p.pid) in str(e.value)
        ro = unidb.connect(db_path, read_only=True)
        t = ro.open_table("t")
        seen = []
        for _ in range(5):
            assert p.stdout.readline().startswith("ACK")
            seen.append(len(t))
            ids = t.to_arrow(columns=["id"]).column("id").to_numpy()
            assert len(np.unique(ids)) == len(ids)       # a consistent snapshot
        assert seen[-1] > 10 and seen == sorted(seen)    # sees the writer's progress
        with pytest.raises(ReadOnlyError):
            t.add(items_rows(1, start=10**6))
        assert len(t.search(np.zeros(8)).limit(5).to_list()) == 5
        ro.close()
    finally:
        p.kill()
        p.wait()
    db = unidb.connect(db_path)                          # the kernel freed the lock on kill
    assert len(db.open_table("t")) >= 10
    db.close()


def test_lock_released_on_close(db_path):
    db = unidb.connect(db_path)
    db.close()
    unidb.connect(db_path).close()
