"""A client's mistake is never a 500 (issue #11, defect 12): each malformed request below used
to raise TypeError / ValueError / UnicodeEncodeError / MemoryError / ZeroDivisionError /
KeyError / RecursionError inside a route. Each now gets a 4xx with the error class the
remote client re-raises, and the server keeps serving."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

import unidb
from unidb.server.app import ServerConfig, create_app
from unidb.server.auth import KeyStore

DIM = 4
V = [0.1, 0.2, 0.3, 0.4]
B64_ONE = "AAAAAAAAAAAAAAAAAAAAAA=="           # four float32 zeros


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "db.unidb"
    db = unidb.connect(path)
    t = db.create_table("t", {"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
                              "name": unidb.String(), "body": unidb.Text(),
                              "emb": unidb.Vector(DIM)})
    rng = np.random.default_rng(0)
    n = 200
    t.add({"id": np.arange(n), "price": rng.uniform(0, 10, n),
           "name": [f"n{i}" for i in range(n)],
           "body": ["red shoe" if i % 2 else "blue hat" for i in range(n)],
           "emb": rng.standard_normal((n, DIM)).astype(np.float32)})
    t.create_index("emb", "partition", target_posting=32)    # so nprobe means something
    db.close()
    key = KeyStore(path).create("admin")
    app = create_app(path, ServerConfig(access_log=False, backup_dir=path.parent / "backups"))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, {"X-API-Key": key, "content-type": "application/json"}


def _search(**request) -> tuple[str, dict]:
    """A search body: the request's JSON (a query vector unless one is given)."""
    return "/tables/t/search", {"vector": V, **request}


HYBRID = {"vector": V, "text": "red"}
DEEP_SQL = "SELECT " + "(" * 3000 + "1" + ")" * 3000

# (url, body as a dict or raw JSON text, status, error class). The first 17 are the issue's.
CASES = {
    "ids NaN": ("/tables/t/get", '{"ids": NaN}', 422, "ValidationError"),
    "ids Infinity in delete": ("/tables/t/delete", '{"ids": [1, Infinity]}', 422,
                               "ValidationError"),
    "lone surrogate in filter": ("/tables/t/count", '{"where": "name = \'\\ud800\'"}', 422,
                                 "ValidationError"),
    "lone surrogate in search filter": (*_search(where="name = '\ud800'"), 422,
                                        "ValidationError"),
    "b64 shape 'x' in rows": ("/tables/t/add", {"columns": {
        "id": [1000], "price": [1.0], "name": ["a"], "body": ["b"],
        "emb": {"b64": B64_ONE, "shape": "x"}}}, 422, "ValidationError"),
    "b64 shape 'x' in search": (*_search(vector={"b64": B64_ONE, "shape": "x"}), 422,
                                "ValidationError"),
    "limit as text": (*_search(limit="5"), 422, "QueryError"),
    "limit as a list": (*_search(limit=[5]), 422, "QueryError"),
    "limit as an object": (*_search(limit={"k": 5}), 422, "QueryError"),
    "nprobe 0": (*_search(params={"nprobe": 0}), 422, "QueryError"),
    "nprobe 'x'": (*_search(params={"nprobe": "x"}), 422, "QueryError"),
    "nprobe 10^12": (*_search(params={"nprobe": 10 ** 12}), 422, "QueryError"),
    "fuse rrf k=-1": (*_search(**HYBRID, fuse={"method": "rrf", "k": -1}), 422, "QueryError"),
    "fuse linear weights='x'": (*_search(**HYBRID, fuse={"method": "linear", "weights": "x"}),
                                422, "QueryError"),
    "select one column 1000 times": (*_search(select=["price"] * 1000), 422, "QueryError"),
    "unknown search field": (*_search(bogus=1), 422, "QueryError"),
    "search body not an object": ("/tables/t/search", [V], 422, "QueryError"),
    "search body not JSON": ("/tables/t/search", "vector = [1, 2]", 422, "ValidationError"),
    "3000 nested parentheses in SQL": ("/sql", {"query": DEEP_SQL}, 422, "QueryError"),
    # Neighbours of the same faults.
    "ids 1.5": ("/tables/t/get", {"ids": 1.5}, 422, "ValidationError"),
    "k instead of limit": (*_search(k=3), 422, "QueryError"),
    "b64 shape disagrees with data": (*_search(vector={"b64": B64_ONE, "shape": [2, 4]}), 422,
                                      "ValidationError"),
    "columns repeated in scan": ("/tables/t/scan", {"columns": ["price"] * 1000}, 422,
                                 "QueryError"),
    "columns repeated in get": ("/tables/t/get", {"ids": [1], "columns": ["id", "id"]}, 422,
                                "QueryError"),
    "JSON nested 3000 deep": ("/tables/t/count", '{"where": {"expr": ' + "[" * 3000
                              + "]" * 3000 + "}}", 422, "ValidationError"),
    "filter tree nested 300 deep": ("/tables/t/count", {"where": {"expr": json.loads(
        '{"op": "not", "arg": ' * 300 + '{"column": "price"}' + "}" * 300)}}, 422,
        "QueryError"),
    "NaN as a limit": (*_search(limit=float("nan")), 422, "QueryError"),
    "NaN as rrf k": (*_search(**HYBRID, fuse={"method": "rrf", "k": float("nan")}), 422,
                     "QueryError"),
    "select a nested list": (*_search(select=[["a"]]), 422, "QueryError"),
    "SQL result with one name twice": ("/sql", {"query": "SELECT a.id, b.id FROM t a, t b "
                                                          "LIMIT 1"}, 422, "QueryError"),
    "backup name too long for the OS": ("/admin/backup", {"dest": "\u00e9" * 200}, 422,
                                        "ValidationError"),
    "body not UTF-8": ("/tables/t/count", b'{"where": "name = \'\xed\xa0\x80\'"}', 422,
                       "ValidationError"),
    "SQL unary chain 400 deep": ("/sql", {"query": "SELECT " + "- " * 400 + "1"}, 422,
                                 "QueryError"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_is_a_4xx(env, name):
    client, headers = env
    url, body, status, cls = CASES[name]
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    content = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    r = client.post(url, content=content, headers=headers)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["class"] == cls and err["status"] == status, (name, err)
    assert "internal server error" not in err["message"]
    # The server is still healthy and the data unchanged.
    assert client.post("/tables/t/count", json={}, headers=headers).json() == {"count": 200}


def test_well_formed_neighbours_still_work(env):
    """The checks refuse only what is wrong: valid forms of each request still succeed."""
    client, headers = env

    def ok(url, body):
        r = client.post(url, json=body, headers=headers)
        assert r.status_code == 200, (url, body, r.text[:300])
        return r.json()

    assert ok("/tables/t/get", {"ids": [1, 2], "columns": ["id", "price"]})["num_rows"] == 2
    assert ok("/tables/t/get", {"ids": 3})["num_rows"] == 1
    rows = ok(*_search(limit=5, params={"nprobe": 2}, select=["price", "name"]))
    assert rows["table"]["num_rows"] == 5
    assert ok(*_search(limit=3, vector={"b64": B64_ONE, "shape": [4]}))["table"]["num_rows"] == 3
    assert ok(*_search(**HYBRID, fuse={"method": "rrf", "k": 10}, limit=4)
              )["table"]["num_rows"] == 4
    assert ok(*_search(**HYBRID, fuse={"method": "linear", "weights": [0.5, 0.5]}, limit=4)
              )["table"]["num_rows"] == 4
    assert ok(*_search(where={"expr": {"op": "<", "left": {"column": "price"},
                                       "right": {"literal": 5}}}, limit=200)
              )["table"]["num_rows"] == ok("/tables/t/count", {"where": "price < 5"})["count"]
    assert ok("/tables/t/count", {"where": "name = 'caf\u00e9 \U0001f600'"}) == {"count": 0}
    # JSON NaN reaches the engine, which refuses it in a list of rows as embedded does.
    r = client.post("/tables/t/upsert", content=b'{"rows": [{"id": 0, "price": NaN, "name": '
                    b'"n0", "body": "blue hat", "emb": [1, 2, 3, 4]}]}', headers=headers)
    assert r.status_code == 422 and "NaN is not stored" in r.text, r.text
    nested = "SELECT " + "(" * 20 + "1" + ")" * 20 + " AS x"
    assert ok("/sql", {"query": nested})["columns"]["x"] == [1]


def test_deep_sql_is_a_query_error_in_python_too(tmp_path):
    db = unidb.connect(tmp_path / "db")
    try:
        with pytest.raises(unidb.QueryError) as e:
            db.sql(DEEP_SQL)
        assert e.value.position is not None and DEEP_SQL[e.value.position] == "("
        with pytest.raises(unidb.QueryError, match="deeper than"):
            db.sql("SELECT " + "- " * 400 + "1")
        assert db.sql("SELECT " + "- " * 40 + "1 AS x").column("x").to_pylist() == [1]
    finally:
        db.close()


def test_every_error_class_is_a_4xx_except_server_faults():
    """Each unidb.errors class gets a client-error status except the server's own faults:
    CorruptionError (its files) is a 500, StorageError (its disk) a 503; the client re-raises
    the same class."""
    from unidb import errors as E
    from unidb.server.errors import error_body, error_from_body, status_of
    for name in E.__all__:
        cls = getattr(E, name)
        exc = cls("boom")
        status = status_of(exc)
        if cls is E.CorruptionError:
            assert status == 500
        elif cls is E.StorageError:
            assert status == 503
        else:
            assert 400 <= status < 500, (name, status)
        assert type(error_from_body(error_body(exc, status), status)) is cls


def test_remote_non_finite_floats_behave_as_embedded(tmp_path):
    """NaN/inf in float columns travel over the wire and meet the same rules as embedded:
    each input gets the same outcome (rows stored, or the same error class), and float64
    values keep their precision."""
    import pandas as pd
    from unidb.client import RemoteDatabase
    path = tmp_path / "db"
    schema = {"id": unidb.Int64(primary_key=True), "x": unidb.Float64(nullable=True)}
    db = unidb.connect(path)
    db.create_table("f", schema)
    db.close()
    local = unidb.connect(tmp_path / "local").create_table("f", schema)
    inputs = [
        [{"id": 1, "x": float("nan")}],                              # list: NaN refused
        [{"id": 2, "x": float("inf")}],
        {"id": [3], "x": [float("-inf")]},
        {"id": np.array([4, 5]), "x": np.array([0.1, np.nan])},      # numpy: NaN = missing
        pd.DataFrame({"id": [6, 7], "x": [1 / 3, np.nan]}),          # pandas likewise
    ]

    def outcome(t, rows):
        try:
            return t.add(rows)
        except unidb.errors.UnidbError as e:
            return type(e).__name__

    app = create_app(path, ServerConfig(auth=False, access_log=False))
    with TestClient(app) as client:
        remote = RemoteDatabase("http://testserver", transport=client._transport).open_table("f")
        for rows in inputs:
            assert outcome(remote, rows) == outcome(local, rows), rows
        got = remote.to_arrow().sort_by("id").to_pylist()
    assert got == local.to_arrow().sort_by("id").to_pylist()
    assert {"id": 6, "x": 1 / 3} in got and {"id": 5, "x": None} in got


def test_full_disk_is_a_503_storage_error_and_nothing_is_applied(tmp_path):
    """The server's own disk failing is not the client's mistake: 503, class StorageError
    (re-raised by the remote client), and the write is not there."""
    from unidb.storage import files
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    db.create_table("t", {"id": unidb.Int64(primary_key=True), "emb": unidb.Vector(DIM)})
    db.close()
    key = KeyStore(path).create("admin")
    app = create_app(path, ServerConfig(access_log=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {"X-API-Key": key, "content-type": "application/json"}
        body = {"rows": [{"id": 1, "emb": V}]}
        with files.FaultPlan(ops="write", name="wal-*"):
            r = client.post("/tables/t/add", json=body, headers=headers)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["class"] == "StorageError"
        assert client.post("/tables/t/count", json={}, headers=headers).json()["count"] == 0
        assert client.post("/tables/t/add", json=body, headers=headers).status_code == 200
