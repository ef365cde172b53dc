"""Request limits: each one answers with the right status and error class, and a request over a
limit changes nothing."""
from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

import unidb
from unidb.client import RemoteDatabase
from unidb.server.app import ServerConfig, create_app
from unidb.server.auth import KeyStore
from unidb.server.limits import Limits

from conftest import items_rows, items_schema

DIM = 4
LIMITS = Limits(max_k=50, max_batch_rows=20, max_body_bytes=20_000, max_filter_chars=40,
                query_timeout_s=0.3, max_result_rows=60, max_queries=3)


@pytest.fixture
def env(tmp_path):
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    db.create_table("t", items_schema(DIM)).add(items_rows(50, DIM))
    db.close()
    key = KeyStore(path).create("admin")
    app = create_app(path, ServerConfig(limits=LIMITS, access_log=False))
    with TestClient(app) as client:
        remote = RemoteDatabase("http://testserver", api_key=key, transport=client._transport)
        yield client, {"X-API-Key": key}, remote.open_table("t")


def _snapshot(t):
    return t.to_arrow(where="id < 1000000").to_pylist()  # via the scan route (<= 60 rows)


def test_max_k(env):
    client, h, t = env
    q = np.zeros(DIM)
    assert len(t.search(q).limit(50).to_list()) == 50
    with pytest.raises(unidb.LimitError):
        t.search(q).limit(51).to_list()
    r = client.post("/tables/t/search", headers=h, json={"vector": [0] * DIM, "limit": 51})
    assert r.status_code == 413 and r.json()["error"]["class"] == "LimitError"


def test_max_batch_rows_changes_nothing(env):
    client, h, t = env
    before = _snapshot(t)
    with pytest.raises(unidb.LimitError):
        t.add(items_rows(21, DIM, start=1000))
    with pytest.raises(unidb.LimitError):
        t.upsert(items_rows(21, DIM, start=0, seed=9))
    r = client.post("/tables/t/add", headers=h, json={"rows": [{"id": 5000 + i} for i in
                                                              range(21)]})
    assert r.status_code == 413
    assert _snapshot(t) == before
    assert t.add(items_rows(20, DIM, start=1000)) == 20


def test_max_body_bytes_changes_nothing(env):
    client, h, t = env
    before = _snapshot(t)
    big = items_rows(10, DIM, start=2000)
    big["category"] = ["x" * 3000] * 10                     # ~30 kB of JSON
    with pytest.raises(unidb.LimitError):
        t.add(big)
    # Without Content-Length (chunked), the server counts bytes as they arrive.
    chunks = (b'{"rows": [' + b",".join([b'{"id": 1}'] * 5000) + b"]}",)
    r = client.post("/tables/t/add", headers={**h, "content-type": "application/json"},
                    content=iter(chunks))
    assert r.status_code == 413 and r.json()["error"]["class"] == "LimitError"
    assert _snapshot(t) == before


def test_max_filter_chars(env):
    client, h, t = env
    long = "price < 10 OR " * 5 + "price < 1"
    before = _snapshot(t)
    with pytest.raises(unidb.LimitError):
        t.count(where=long)
    with pytest.raises(unidb.LimitError):
        t.delete(where=long)
    with pytest.raises(unidb.LimitError):
        t.update(where=long, values={"price": 1.0})
    with pytest.raises(unidb.LimitError):
        t.search(np.zeros(DIM)).where(long).to_list()
    assert _snapshot(t) == before


def test_result_rows_and_queries(env):
    client, h, t = env
    t.add(items_rows(20, DIM, start=100))                    # 70 rows > max_result_rows 60
    with pytest.raises(unidb.LimitError):
        t.to_arrow()
    with pytest.raises(unidb.LimitError):
        t.search(np.zeros(DIM)).distance_range(max=1e9).to_list()
    with pytest.raises(unidb.LimitError):
        t.search(np.zeros((4, DIM))).limit(2).to_list()
    assert len(t.search(np.zeros((3, DIM))).limit(2).to_list()) == 3


def test_query_timeout(env, monkeypatch):
    client, h, t = env
    from unidb.engine import execute
    real = execute.run

    def slow(request, table):                     # the server's search executor, slowed
        time.sleep(1.0)
        return real(request, table)
    monkeypatch.setattr(execute, "run", slow)
    r = client.post("/tables/t/search", headers=h, json={"vector": [0] * DIM})
    assert r.status_code == 504 and r.json()["error"]["class"] == "LimitError"
    with pytest.raises(unidb.LimitError):
        t.search(np.zeros(DIM)).to_list()
    monkeypatch.setattr(execute, "run", real)
    assert len(t.search(np.zeros(DIM)).limit(3).to_list()) == 3


def test_limits_from_dict():
    assert Limits.from_dict({"max_k": 5}).max_k == 5
    with pytest.raises(ValueError):
        Limits.from_dict({"max_kk": 5})
