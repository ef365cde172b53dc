"""The auth matrix on every route: no key / bad key -> 401, read key on a write -> 403, admin
passes; /health needs no key; --no-auth only on loopback; revoked keys stop working."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import unidb
from unidb.server.app import ServerConfig, create_app
from unidb.server.auth import KeyStore
from unidb.server.routes import router

SCHEMA = unidb.Schema({"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
                       "emb": unidb.Vector(2)}).to_json()
ROW = {"id": 1, "price": 2.0, "emb": [0.5, 0.5]}

# One request per route: (method, path, JSON body). A new route must be added here, or
# test_every_route_is_covered fails.
SAMPLES = {
    ("GET", "/health"): ("/health", None),
    ("GET", "/metrics"): ("/metrics", None),
    ("GET", "/tables"): ("/tables", None),
    ("POST", "/tables"): ("/tables", {"name": "other", "schema": SCHEMA}),
    ("GET", "/tables/{name}"): ("/tables/t", None),
    ("DELETE", "/tables/{name}"): ("/tables/other?missing_ok=true", None),
    ("POST", "/tables/{name}/add"): ("/tables/t/add", {"rows": [{**ROW, "id": 7}]}),
    ("POST", "/tables/{name}/upsert"): ("/tables/t/upsert", {"rows": [ROW]}),
    ("POST", "/tables/{name}/delete"): ("/tables/t/delete", {"ids": [99]}),
    ("POST", "/tables/{name}/update"): ("/tables/t/update", {"where": "id = 1",
                                                             "values": {"price": 3.0}}),
    ("POST", "/tables/{name}/get"): ("/tables/t/get", {"ids": [1]}),
    ("POST", "/tables/{name}/count"): ("/tables/t/count", {}),
    ("POST", "/tables/{name}/scan"): ("/tables/t/scan", {}),
    ("POST", "/tables/{name}/search"): ("/tables/t/search", {"vector": [0, 1], "limit": 3}),
    ("POST", "/tables/{name}/indexes"): ("/tables/t/indexes", {"column": "price"}),
    ("GET", "/tables/{name}/indexes"): ("/tables/t/indexes", None),
    ("DELETE", "/tables/{name}/indexes/{column}"): ("/tables/t/indexes/price", None),
    ("GET", "/tables/{name}/indexes/{column}/stats"): ("/tables/t/indexes/emb/stats", None),
    ("GET", "/tables/{name}/stats"): ("/tables/t/stats", None),
    ("POST", "/tables/{name}/flush"): ("/tables/t/flush", None),
    ("POST", "/tables/{name}/compact"): ("/tables/t/compact", None),
    ("POST", "/sql"): ("/sql", {"query": "SELECT id FROM t"}),
    ("POST", "/admin/backup"): ("/admin/backup", {"dest": "b1"}),
    ("POST", "/admin/restore"): ("/admin/restore", {"backup": "b1", "target": "r1"}),
    ("GET", "/openapi.json"): ("/openapi.json", None),
}


def _routes() -> list[tuple[str, str, str]]:
    """(method, path template, role) of every route the app serves."""
    out = [("GET", "/openapi.json", "read")]
    for r in router.routes:
        for m in sorted(r.methods - {"HEAD"}):
            out.append((m, r.path, r.openapi_extra["x-unidb-role"]))
    return out


@pytest.fixture
def env(tmp_path):
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    db.create_table("t", unidb.Schema.from_json(SCHEMA)).add([ROW])
    db.close()
    ks = KeyStore(path)
    keys = {"admin": ks.create("admin", "a"), "read": ks.create("read", "r")}
    app = create_app(path, ServerConfig(backup_dir=tmp_path / "backups", access_log=False))
    with TestClient(app) as client:
        yield client, keys, ks


def _send(client, method: str, url: str, body, headers: dict):
    return client.request(method, url, json=body, headers=headers)


def test_every_route_is_covered():
    assert {(m, p) for m, p, _ in _routes()} == set(SAMPLES)


def test_no_key_and_bad_keys_get_401(env):
    client, keys, _ = env
    admin = keys["admin"]
    kid = admin.split("_")[1]
    bad = [{}, {"X-API-Key": "nonsense"}, {"Authorization": "Bearer udb_deadbeef_xyz"},
           {"Authorization": f"Bearer udb_{kid}_wrongsecret"}, {"Authorization": admin},
           {"Authorization": "Basic " + admin}, {"X-API-Key": ""}]
    for method, path, need in _routes():
        url, body = SAMPLES[(method, path)]
        for headers in bad:
            r = _send(client, method, url, body, headers)
            if need == "none":
                assert r.status_code == 200, (method, path)
                continue
            assert r.status_code == 401, (method, path, headers, r.text)
            err = r.json()["error"]
            assert err["class"] == "AuthError" and err["status"] == 401
            assert r.headers.get("www-authenticate") == "Bearer"


def test_unreadable_or_conflicting_credentials_get_401(env):
    """A credential the server cannot read is refused, not skipped in favour of another."""
    client, keys, _ = env
    admin, read = keys["admin"], keys["read"]
    for headers in ({"Authorization": "Basic xyz", "X-API-Key": admin},
                    {"Authorization": "Bearer", "X-API-Key": admin},
                    {"Authorization": f"Bearer {read}", "X-API-Key": admin},
                    {"Authorization": "Bearer udb_deadbeef_xyz", "X-API-Key": admin}):
        r = client.get("/tables", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["class"] == "AuthError"
    both = {"Authorization": f"Bearer {admin}", "X-API-Key": admin}
    assert client.get("/tables", headers=both).status_code == 200


def test_method_not_allowed_names_every_method_of_the_path(env):
    client, keys, _ = env
    r = client.put("/tables", headers={"X-API-Key": keys["admin"]})
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    r = client.put("/tables/t/indexes", headers={"X-API-Key": keys["admin"]})
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}


def test_read_key_cannot_write(env):
    client, keys, _ = env
    before = client.post("/tables/t/scan", json={},
                         headers={"X-API-Key": keys["read"]}).json()
    for method, path, need in _routes():
        url, body = SAMPLES[(method, path)]
        r = _send(client, method, url, body, {"Authorization": f"Bearer {keys['read']}"})
        if need == "admin":
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["class"] == "AuthError"
        else:
            assert r.status_code not in (401, 403), (method, path, r.text)
    after = client.post("/tables/t/scan", json={}, headers={"X-API-Key": keys["read"]}).json()
    assert after == before                                   # nothing changed


def test_admin_key_passes_everywhere(env):
    client, keys, _ = env
    order = sorted(_routes(), key=lambda r: r[0] == "DELETE")   # drops last
    for method, path, _ in order:
        url, body = SAMPLES[(method, path)]
        r = _send(client, method, url, body, {"X-API-Key": keys["admin"]})
        assert r.status_code not in (401, 403), (method, path, r.text)
        assert r.status_code < 500, (method, path, r.text)


def test_revoked_key_and_keys_file(env, tmp_path):
    client, keys, ks = env
    h = {"X-API-Key": keys["read"]}
    assert client.get("/tables", headers=h).status_code == 200
    ks.revoke(keys["read"].split("_")[1])
    assert client.get("/tables", headers=h).status_code == 401   # the server re-reads keys
    text = ks.path.read_text()
    assert keys["admin"].split("_", 2)[2] not in text             # secrets are never stored
    assert {k["role"] for k in ks.list()} == {"admin"}
    with pytest.raises(unidb.NotFoundError):
        ks.revoke("nope")


def test_remote_client_raises_auth_errors(env):
    client, keys, _ = env
    from unidb.client import RemoteDatabase
    for key, call in ((None, lambda d: d.table_names()), ("udb_x_y", lambda d: d.table_names()),
                      (keys["read"], lambda d: d.drop_table("t"))):
        d = RemoteDatabase("http://testserver", api_key=key, transport=client._transport)
        with pytest.raises(unidb.AuthError):
            call(d)
    d = RemoteDatabase("http://testserver", api_key=keys["read"], transport=client._transport)
    t = d.open_table("t")
    assert len(t) == 1
    with pytest.raises(unidb.AuthError):
        t.add([{**ROW, "id": 5}])
    assert len(t) == 1


def test_no_auth_only_on_loopback(tmp_path):
    for host in ("0.0.0.0", "10.1.2.3", "example.com", "::"):
        with pytest.raises(unidb.AuthError):
            ServerConfig(host=host, auth=False).check()
        with pytest.raises(unidb.AuthError):
            create_app(tmp_path / "x", ServerConfig(host=host, auth=False))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        ServerConfig(host=host, auth=False).check()
    ServerConfig(host="0.0.0.0", auth=True).check()                 # keys required: allowed
    app = create_app(tmp_path / "y", ServerConfig(auth=False, access_log=False))
    with TestClient(app) as c:
        assert c.post("/tables", json={"name": "n", "schema": SCHEMA}).status_code == 201


def test_errors_are_json(env):
    client, keys, _ = env
    h = {"X-API-Key": keys["admin"]}
    cases = [("GET", "/tables/missing", None, 404, "NotFoundError"),
             ("POST", "/tables", {"name": "t", "schema": SCHEMA}, 409, "SchemaError"),
             ("POST", "/tables/t/add", {"rows": [ROW]}, 422, "ValidationError"),
             ("POST", "/tables/t/count", {"where": "price <"}, 422, "QueryError"),
             ("POST", "/tables/t/add", {"bogus": 1}, 422, "ValidationError"),
             ("GET", "/no/such/route", None, 404, "NotFoundError")]
    for method, url, body, status, cls in cases:
        r = client.request(method, url, json=body, headers=h)
        assert r.status_code == status, (url, r.text)
        assert r.json()["error"]["class"] == cls
    r = client.post("/tables/t/count", content=b"{not json", headers={**h, "content-type":
                                                                       "application/json"})
    assert r.status_code == 422 and r.json()["error"]["class"] == "ValidationError"
    r = client.post("/tables/t/count", json={"where": "price <"}, headers=h)
    assert r.json()["error"]["position"] is not None


def test_read_key_sql_is_read_only(env):
    """SQL has DDL and DML: a read key may only run queries through /sql."""
    client, keys, _ = env
    read, admin = {"X-API-Key": keys["read"]}, {"X-API-Key": keys["admin"]}
    r = client.post("/sql", json={"query": "SELECT id FROM t"}, headers=read)
    if r.status_code != 200:
        pytest.skip(f"SQL is not available in this build: {r.text}")
    for q in ("INSERT INTO t (id, price, emb) VALUES (9, 1.0, [1.0, 2.0])", "DELETE FROM t",
              "DROP TABLE t", "UPDATE t SET price = 0", "SELECT 1; DROP TABLE t",
              "CREATE TABLE z (id BIGINT PRIMARY KEY)", "EXPLAIN DELETE FROM t", "garbage ((("):
        r = client.post("/sql", json={"query": q}, headers=read)
        assert r.status_code == 403, (q, r.text)
    assert client.post("/tables/t/count", json={}, headers=read).json()["count"] == 1
    assert client.get("/tables", headers=read).json()["tables"] == ["t"]
    r = client.post("/sql", json={"query": "DELETE FROM t"}, headers=admin)
    assert r.status_code == 200, r.text
    assert client.post("/tables/t/count", json={}, headers=read).json()["count"] == 0
