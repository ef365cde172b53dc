"""kill -9 of `unidb serve` while clients write loses no acknowledged write and tears no batch;
SIGTERM shuts down gracefully (finishes in-flight writes, closes the database)."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

import unidb
from unidb.server.auth import KeyStore

from conftest import REPO

BATCH = 40
DIM = 8
WRITERS = 2
STARTUP_S = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(path, port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "unidb.cli", "serve", str(path), "--port",
                          str(port), "--no-access-log", "--log-level", "warning"],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + STARTUP_S
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"server exited: {p.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return p
        except httpx.HTTPError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("server did not start")


def _rows(start: int) -> dict:
    ids = np.arange(start, start + BATCH)
    return {"id": ids, "tag": [f"b{start}"] * BATCH,
            "v": np.tile(ids[:, None], (1, DIM)).astype(np.float32)}


def _write_until_killed(url: str, key: str, base: int, acked: list, stop: threading.Event):
    db = unidb.connect(url, api_key=key, timeout=10)
    t = db.open_table("t")
    start = base
    while not stop.is_set():
        try:
            t.add(_rows(start))
        except unidb.UnidbError:
            return                               # the server died: this batch is unknown
        acked.append(start)                      # acknowledged: must survive
        start += BATCH


def test_kill9_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    db.create_table("t", {"id": unidb.Int64(primary_key=True), "tag": unidb.String(),
                          "v": unidb.Vector(DIM)})
    db.close()
    key = KeyStore(path).create("admin")
    acked_all: list[int] = []
    for cycle in range(2):
        port = _free_port()
        p = _start(path, port)
        url = f"http://127.0.0.1:{port}"
        acked: list[int] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_write_until_killed,
                                    args=(url, key, (cycle * WRITERS + w) * 10**7, acked, stop))
                   for w in range(WRITERS)]
        for th in threads:
            th.start()
        deadline = time.time() + STARTUP_S
        while len(acked) < 3 and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.2 + 0.3 * cycle)
        p.send_signal(signal.SIGKILL)
        p.wait()
        stop.set()
        for th in threads:
            th.join(timeout=20)
        acked_all += acked
        assert acked, "no write was acknowledged before the kill"
    db = unidb.connect(path)                     # recovery; the dead server left no lock
    t = db.open_table("t")
    got = t.to_arrow(columns=["id", "tag"])
    ids = set(got.column("id").to_pylist())
    missing = [a for a in acked_all if a not in ids]
    assert not missing, f"{len(missing)} acknowledged batches lost"
    # Every stored batch is whole (an unacknowledged in-flight batch is all or nothing).
    tags = got.column("tag").to_pylist()
    counts: dict[str, int] = {}
    for tag in tags:
        counts[tag] = counts.get(tag, 0) + 1
    assert set(counts.values()) == {BATCH}
    db.close()


def test_sigterm_finishes_and_closes(tmp_path):
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    db.create_table("t", {"id": unidb.Int64(primary_key=True), "tag": unidb.String(),
                          "v": unidb.Vector(DIM)})
    db.close()
    key = KeyStore(path).create("admin")
    port = _free_port()
    p = _start(path, port)
    acked: list[int] = []
    stop = threading.Event()
    th = threading.Thread(target=_write_until_killed,
                          args=(f"http://127.0.0.1:{port}", key, 0, acked, stop))
    th.start()
    deadline = time.time() + STARTUP_S
    while len(acked) < 3 and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once shutdown is complete (the exit a service manager expects)
    assert p.wait(timeout=30) in (0, -signal.SIGTERM)
    stop.set()
    th.join(timeout=20)
    err = p.stderr.read().decode()
    assert "Traceback" not in err, err[-2000:]
    db = unidb.connect(path)                     # lock released by a clean close
    t = db.open_table("t")
    ids = set(t.to_arrow(columns=["id"]).column("id").to_pylist())
    assert all(a in ids for a in acked) and acked
    # The server closed the database: everything is checkpointed, nothing left to replay.
    assert t._store.manifest.checkpoint_lsn == t._store.state.lsn
    db.close()
