"""Operations: /health without a key, Prometheus metrics, structured JSON logs."""
from __future__ import annotations

import io
import json
import logging

import numpy as np
from fastapi.testclient import TestClient

import unidb
from unidb.server.app import ServerConfig, create_app
from unidb.server.auth import KeyStore
from unidb.server.logs import configure

from conftest import items_rows, items_schema


def test_health_metrics_and_logs(tmp_path):
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    t = db.create_table("items", items_schema(4))
    t.add(items_rows(40, 4))
    t.create_index("emb", kind="partition")
    db.close()
    key = KeyStore(path).create("read", "scraper")
    stream = io.StringIO()
    configure("info", stream=stream)
    try:
        with TestClient(create_app(path, ServerConfig())) as c:
            assert c.get("/health").json()["status"] == "ok"
            h = {"Authorization": f"Bearer {key}"}
            for _ in range(3):
                r = c.post("/tables/items/search", headers=h,
                           json={"vector": np.zeros(4).tolist()})
                assert r.status_code == 200
            c.post("/tables/items/add", headers=h, json={"rows": []})      # 403
            c.get("/tables/nope", headers=h)                                # 404
            text = c.get("/metrics", headers=h).text
    finally:
        for name in ("unidb", "uvicorn", "uvicorn.error"):
            logging.getLogger(name).handlers[:] = []
            logging.getLogger(name).propagate = True
    route = 'route="/tables/{name}/search"'
    assert f'unidb_http_requests_total{{method="POST",{route},status="200"}} 3' in text
    assert 'route="/tables/{name}/add",status="403"} 1' in text
    assert 'route="/tables/{name}",status="404"} 1' in text
    assert f'unidb_http_request_seconds_count{{method="POST",{route}}} 3' in text
    assert f'unidb_http_request_seconds_bucket{{method="POST",{route},le="+Inf"}} 3' in text
    assert 'unidb_table_rows{table="items"} 40' in text
    assert 'unidb_table_disk_bytes{table="items"}' in text
    assert 'unidb_index_stat{table="items",column="emb"' in text
    assert "# TYPE unidb_http_request_seconds histogram" in text
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    reqs = [d for d in lines if d["msg"] == "request"]
    assert any(d["route"] == "/tables/{name}/search" and d["status"] == 200 and d["ms"] >= 0
               and d["key"] == key.split("_")[1] for d in reqs)
    assert all(key.split("_", 2)[2] not in json.dumps(d) for d in lines)   # never the secret
    assert any(d["msg"] == "serving" for d in lines) and any(d["msg"] == "stopped"
                                                              for d in lines)
