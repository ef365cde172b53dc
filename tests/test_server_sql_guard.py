"""A read key runs queries only, decided on the parsed statement (issue #11, defect 13), and no
statement — from any key or from Python — leaves a table, view, macro or setting behind in
the DuckDB connection that later statements share."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import unidb
from unidb.server.app import ServerConfig, create_app
from unidb.server.auth import KeyStore
from unidb.sql import is_read_only
from unidb.sql.relational import connection

SCHEMA = unidb.Schema({"id": unidb.Int64(primary_key=True), "price": unidb.Float64()})

# Statements a read key must not run: each writes, or changes the shared DuckDB connection.
WRITES = [
    "SELECT * INTO leak FROM items",
    "SELECT id INTO TEMP leak FROM items",
    "(SELECT 1) UNION (SELECT id INTO leak FROM items)",
    "CREATE TABLE leak AS SELECT * FROM items",
    "CREATE TEMP TABLE leak AS SELECT * FROM items",
    "CREATE TEMP VIEW leak AS SELECT * FROM items",
    "CREATE VIEW leak AS SELECT 1",
    "CREATE MACRO leak(x) AS x + 1",
    "CREATE TEMP MACRO leak(x) AS x + 1",
    "CREATE SEQUENCE leak",
    "CREATE TYPE leak AS ENUM ('a')",
    "COPY items TO 'leak.csv'",
    "COPY (SELECT 1) TO 'leak.csv'",
    "EXPORT DATABASE 'leak'",
    "ATTACH 'leak.db' AS leak",
    "DETACH leak",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA enable_profiling",
    "SET threads = 1",
    "SET VARIABLE leak = 1",
    "RESET threads",
    "USE leak",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN",
    "SELECT 1; SELECT 2",
    "SELECT 1; DROP TABLE items",
    "WITH x AS (SELECT 1) INSERT INTO items SELECT 5, 1.0 FROM x",
    "WITH x AS (DELETE FROM items RETURNING *) SELECT * FROM x",
    "INSERT INTO items VALUES (7, 1.0)",
    "UPDATE items SET price = 0",
    "DELETE FROM items",
    "DROP TABLE items",
    "CREATE TABLE z (id BIGINT PRIMARY KEY)",
    "CREATE INDEX ON items (price)",
    "EXPLAIN DELETE FROM items",
    "EXPLAIN ANALYZE SELECT 1",
    "SELECT setseed(0.5)",
    "SELECT nextval('leak')",
    "garbage (((",
    "",
]
READS = [
    "SELECT id FROM items",
    "SELECT count(*) AS n FROM items WHERE price > 1",
    "SELECT 1 AS a UNION ALL SELECT 2",
    "SELECT id FROM items EXCEPT SELECT 5",
    "WITH c AS (SELECT id FROM items) SELECT * FROM c",
    "EXPLAIN SELECT id FROM items",
    "SELECT 'SELECT * INTO leak' AS text",
]


def test_read_only_is_decided_on_the_parsed_statement():
    for q in WRITES:
        assert not is_read_only(q), q
    for q in READS:
        assert is_read_only(q), q


def _user_objects() -> list:
    """What this thread's DuckDB connection holds beyond the built-ins."""
    con = connection()
    return (con.sql("SELECT table_name FROM duckdb_tables()").fetchall()
            + con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
            + con.sql("SELECT function_name FROM duckdb_functions() WHERE NOT internal")
            .fetchall()
            + con.sql("SELECT sequence_name FROM duckdb_sequences()").fetchall())


def test_no_statement_leaves_state_in_duckdb(tmp_path):
    """From Python (any caller): DuckDB-only statements are refused, nothing is left behind."""
    db = unidb.connect(tmp_path / "db")
    try:
        db.create_table("items", SCHEMA).add([{"id": 1, "price": 2.0}])
        before = _user_objects()
        threads = connection().sql("SELECT current_setting('threads')").fetchall()
        for q in WRITES:
            if q.startswith(("INSERT", "UPDATE", "DELETE", "DROP", "CREATE INDEX",
                             "SELECT 1; DROP", "CREATE TABLE z")):
                continue                                 # unidb's own DML/DDL: tested elsewhere
            with pytest.raises(unidb.QueryError):
                db.sql(q)
        assert _user_objects() == before
        assert connection().sql("SELECT current_setting('threads')").fetchall() == threads
        assert db.table_names() == ["items"]
        with pytest.raises(unidb.QueryError, match="INTO is not supported"):
            db.sql("SELECT * INTO leak FROM items")
        assert db.sql("SELECT id FROM items").column("id").to_pylist() == [1]
    finally:
        db.close()


@pytest.fixture
def env(tmp_path):
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    db.create_table("items", SCHEMA).add([{"id": 1, "price": 2.0}])
    db.close()
    ks = KeyStore(path)
    keys = {"admin": {"X-API-Key": ks.create("admin")}, "read": {"X-API-Key": ks.create("read")}}
    app = create_app(path, ServerConfig(access_log=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, keys


def test_read_key_gets_403_for_every_write(env):
    client, keys = env
    for q in WRITES:
        r = client.post("/sql", json={"query": q}, headers=keys["read"])
        assert r.status_code == 403, (q, r.text)
        assert r.json()["error"]["class"] == "AuthError"
    for q in READS:
        r = client.post("/sql", json={"query": q}, headers=keys["read"])
        assert r.status_code == 200, (q, r.text)
    r = client.post("/tables/items/count", json={}, headers=keys["read"])
    assert r.json() == {"count": 1}


def test_select_into_leaves_no_table_for_later_requests(env):
    """The reported leak: SELECT ... INTO created `leak` in the server's DuckDB connection."""
    client, keys = env
    r = client.post("/sql", json={"query": "SELECT * INTO leak FROM items"},
                    headers=keys["read"])
    assert r.status_code == 403
    r = client.post("/sql", json={"query": "SELECT * INTO leak FROM items"},
                    headers=keys["admin"])
    assert r.status_code == 422 and r.json()["error"]["class"] == "QueryError"
    for _ in range(5):                  # whichever worker thread (and connection) serves it
        r = client.post("/sql", json={"query": "SELECT * FROM leak"}, headers=keys["read"])
        assert r.status_code == 422, r.text
    for who in ("read", "admin"):
        r = client.post("/sql", json={"query": "SELECT count(*) AS n FROM duckdb_tables()"},
                        headers=keys[who])
        assert r.status_code == 200 and r.json()["columns"]["n"] == [0], r.text


def test_admin_duckdb_statements_are_4xx_not_state(env):
    """An admin key may write through unidb, but DuckDB-only statements are refused."""
    client, keys = env
    for q in ("CREATE TEMP VIEW leak AS SELECT 1", "CREATE MACRO leak(x) AS x",
              "SET threads = 1", "ATTACH 'leak.db'", "INSTALL httpfs", "COPY items TO 'x.csv'",
              "SELECT setseed(0.5)"):
        r = client.post("/sql", json={"query": q}, headers=keys["admin"])
        assert 400 <= r.status_code < 500, (q, r.text)
    r = client.post("/sql", json={"query": "SELECT count(*) AS n FROM duckdb_views() "
                                           "WHERE NOT internal"}, headers=keys["read"])
    assert r.json()["columns"]["n"] == [0]
