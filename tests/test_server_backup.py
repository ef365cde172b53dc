"""Backup and restore: consistent copies while writes go on, confined to the backup folder
(path traversal rejected), restore only into a new or empty folder."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

import unidb
from unidb.server.app import ServerConfig, create_app
from unidb.server.auth import KeyStore
from unidb.storage import backup as bk

from conftest import items_rows, items_schema

DIM = 4
BATCH = 25


def _check_whole_batches(t, acked_before: int, acked_after: int) -> int:
    """Rows are whole batches, at least those acknowledged before the copy began."""
    ids = sorted(t.to_arrow(columns=["id"]).column("id").to_pylist())
    n = len(ids)
    assert n % BATCH == 0 and ids == list(range(n)), "a batch was torn"
    assert acked_before * BATCH <= n <= acked_after * BATCH
    return n


def test_backup_while_writing_then_restore(tmp_path):
    db = unidb.connect(tmp_path / "src.unidb")
    t = db.create_table("t", items_schema(DIM))
    t.create_index("price")
    db.create_table("u", items_schema(DIM)).add(items_rows(10, DIM))
    acked = [0]
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set() and i < 2000:
            t.add(items_rows(BATCH, DIM, start=i * BATCH, seed=i))
            i += 1
            acked[0] = i
            if i % 7 == 0:
                t.flush()
    th = threading.Thread(target=writer)
    th.start()
    try:
        while acked[0] < 5:
            time.sleep(0.001)
        results = []
        for k in range(3):
            before = acked[0]
            info = db.backup(tmp_path / f"bk{k}")
            results.append((before, acked[0], info))
    finally:
        stop.set()
        th.join()
    db.close()
    for k, (before, after, info) in enumerate(results):
        assert set(info["tables"]) == {"t", "u"}
        target = tmp_path / f"restored{k}"
        bk.restore(tmp_path / f"bk{k}", target)
        r = unidb.connect(target)
        n = _check_whole_batches(r.open_table("t"), before, after)
        assert n == info["tables"]["t"]["rows"]
        assert len(r.open_table("u")) == 10
        assert "price" in r.open_table("t").list_indexes()
        r.close()
    assert not list(tmp_path.glob("*.partial-*"))


def test_restore_needs_new_or_empty_target(tmp_path):
    db = unidb.connect(tmp_path / "src.unidb")
    db.create_table("t", items_schema(DIM)).add(items_rows(5, DIM))
    db.backup(tmp_path / "b")
    with pytest.raises(unidb.ValidationError):
        db.backup(tmp_path / "b")     # never overwrite a backup
    db.close()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    with pytest.raises(unidb.ValidationError):
        bk.restore(tmp_path / "b", occupied)
    with pytest.raises(unidb.NotFoundError):
        bk.restore(tmp_path / "occupied", tmp_path / "new")
    (tmp_path / "empty").mkdir()
    bk.restore(tmp_path / "b", tmp_path / "empty")
    assert len(unidb.connect(tmp_path / "empty").open_table("t")) == 5


TRAVERSALS = ["../escape", "/tmp/escape", "a/../../escape", "..", "", " ", "~/escape",
              "./../escape", "ok/../../../escape", "link/inside", "link", "a\0b"]


def test_confine_rejects_traversal(tmp_path):
    root = tmp_path / "backups"
    root.mkdir()
    os.symlink(tmp_path, root / "link")                      # a symlink pointing outside
    for name in TRAVERSALS:
        with pytest.raises(unidb.ValidationError):
            bk.confine(root, name)
    assert bk.confine(root, "nightly/2025-01-01") == (root / "nightly/2025-01-01").resolve()


def test_http_backup_confined(tmp_path):
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    db.create_table("t", items_schema(DIM)).add(items_rows(30, DIM))
    db.close()
    key = KeyStore(path).create("admin")
    root = tmp_path / "backups"
    root.mkdir()
    os.symlink(tmp_path, root / "link")
    h = {"X-API-Key": key}
    before = sorted(p.name for p in tmp_path.iterdir())
    with TestClient(create_app(path, ServerConfig(backup_dir=root, access_log=False))) as c:
        for name in TRAVERSALS:
            r = c.post("/admin/backup", json={"dest": name}, headers=h)
            assert r.status_code == 422, (name, r.text)
            assert r.json()["error"]["class"] == "ValidationError"
            r = c.post("/admin/restore", json={"backup": "ok", "target": name}, headers=h)
            assert r.status_code == 422, (name, r.text)
            r = c.post("/admin/restore", json={"backup": name, "target": "new"}, headers=h)
            assert r.status_code == 422, (name, r.text)
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        r = c.post("/admin/backup", json={"dest": "nightly/one"}, headers=h)
        assert r.status_code == 200 and r.json()["tables"]["t"]["rows"] == 30
        r = c.post("/admin/restore", json={"backup": "nightly/one", "target": "copy"}, headers=h)
        assert r.status_code == 200
        r = c.post("/admin/restore", json={"backup": "nightly/one", "target": "copy"}, headers=h)
        assert r.status_code == 422                           # target not empty
    assert len(unidb.connect(root / "copy").open_table("t")) == 30
    with TestClient(create_app(path, ServerConfig(access_log=False))) as c:
        r = c.post("/admin/backup", json={"dest": "x"}, headers=h)
        assert r.status_code == 400 and "backup-dir" in r.json()["error"]["message"]


def test_remote_client_backup(tmp_path):
    from unidb.server.testing import serve_in_thread
    path = tmp_path / "db.unidb"
    unidb.connect(path).close()
    key = KeyStore(path).create("admin")
    root = tmp_path / "backups"
    with serve_in_thread(path, ServerConfig(port=0, backup_dir=root, access_log=False)) as url:
        d = unidb.connect(url, api_key=key)
        d.create_table("t", items_schema(DIM)).add(items_rows(7, DIM))
        assert d.backup("b1")["tables"]["t"]["rows"] == 7
        with pytest.raises(unidb.ValidationError):
            d.backup("../b2")
        d.close()
    r = unidb.connect(root / "b1")
    got = r.open_table("t").get([3]).column("emb").to_pylist()[0]
    np.testing.assert_array_equal(got, items_rows(7, DIM)["emb"][3])
    r.close()
