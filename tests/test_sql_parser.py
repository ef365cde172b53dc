"""SQL parsing: pgvector operators, parameters, errors with line/column, and the CLI."""
import os
import subprocess
import sys
import io

import numpy as np
import pytest

import unidb
from unidb.errors import QueryError
from unidb.sql.parser import parse


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    d = unidb.connect(tmp_path_factory.mktemp("p") / "db")
    d.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR, price DOUBLE, "
          "v VECTOR(3), c VECTOR(3) USING cosine, p VECTOR(3, ip))")
    rng = np.random.default_rng(1)
    d.open_table("t").add({"id": np.arange(40), "name": [f"n<->{i}" for i in range(40)],
                           "price": rng.random(40) * 10, "v": rng.standard_normal((40, 3)),
                           "c": rng.standard_normal((40, 3)), "p": rng.standard_normal((40, 3))})
    yield d
    d.close()


def _arrays(db):
    t = db.open_table("t").to_arrow()
    m = {c: np.stack(t.column(c).to_numpy(zero_copy_only=False)).astype(np.float64)
         for c in ("v", "c", "p")}
    return t.column("id").to_numpy(), t.column("price").to_numpy(), m


def test_operators_become_functions_but_not_inside_strings():
    tree, explain, n = parse("SELECT 'a <-> b' AS s, \"x<#>y\" FROM t -- <=> here\n"
                             "WHERE v <-> $1 < 2 ORDER BY c <=> $2, p <#> $3")
    sql = tree.sql().lower()
    assert "'a <-> b'" in sql and '"x<#>y"' in sql and n == 3 and not explain
    assert "l2_distance(v, " in sql and "cosine_distance(c, " in sql
    assert "negative_inner_product(p, " in sql


def test_three_metrics_match_numpy(db):
    ids, price, m = _arrays(db)
    q = np.array([0.3, -1.0, 0.5])
    for op, col, fn in (("<->", "v", lambda x: np.linalg.norm(x - q, axis=1)),
                        ("<=>", "c", lambda x: 1 - x @ q / np.linalg.norm(x, axis=1)
                         / np.linalg.norm(q)),
                        ("<#>", "p", lambda x: -(x @ q))):
        got = db.sql(f"SELECT id, {col} {op} $1 AS d FROM t ORDER BY {col} {op} $1 LIMIT 5",
                     [q])
        want = fn(m[col])
        assert got.column("id").to_pylist() == ids[np.argsort(want)[:5]].tolist()
        np.testing.assert_allclose(got.column("d").to_numpy(), np.sort(want)[:5], rtol=1e-5,
                                   atol=1e-6)
    got = db.sql("SELECT id, inner_product(p, $1) AS s FROM t ORDER BY s DESC LIMIT 3", [q])
    assert got.column("id").to_pylist() == ids[np.argsort(-(m["p"] @ q))[:3]].tolist()
    # the inner-product range: <#> bounds the negative dot product
    got = db.sql("SELECT id FROM t WHERE p <#> $1 <= -0.5", [q])
    assert sorted(got.column("id").to_pylist()) == sorted(ids[-(m["p"] @ q) <= -0.5].tolist())


def test_parameters_both_styles_and_types(db):
    ids, price, m = _arrays(db)
    q = [0.1, 0.2, 0.3]
    a = db.sql("SELECT id FROM t WHERE price < $2 AND name <> $3 ORDER BY v <-> $1 LIMIT $4",
               [np.array(q), 5.0, "n<->3", 4])
    b = db.sql("SELECT id FROM t WHERE price < ? AND name <> ? ORDER BY v <-> ? LIMIT ?",
               (np.float64(5.0), "n<->3", q, np.int64(4)))
    c = db.sql("SELECT id FROM t WHERE price < 5.0 AND name <> 'n<->3' "
               "ORDER BY v <-> '[0.1,0.2,0.3]' LIMIT 4")
    assert a.column("id").to_pylist() == b.column("id").to_pylist() == c.column("id").to_pylist()
    d = np.linalg.norm(m["v"] - np.array(q), axis=1)
    keep = (price < 5) & (ids != 3)
    assert a.column("id").to_pylist() == ids[keep][np.argsort(d[keep])[:4]].tolist()
    # a string parameter is data, never SQL
    got = db.sql("SELECT count(*) AS n FROM t WHERE name = $1", ["x' OR '1'='1"])
    assert got.column("n").to_pylist() == [0]
    # a lone numpy vector is the single parameter $1
    assert db.sql("SELECT id FROM t ORDER BY v <-> $1 LIMIT 1", np.array(q)).num_rows == 1


@pytest.mark.parametrize("sql, line, column, fragment", [
    ("SELECT id FROM t WHERE (price < 3", 1, 33, "Expecting )"),
    ("SELECT id\nFROM t\nWHERE price < 3 LIMT 5", 3, 17, "LIMT"),
    ("SELECT id FROM t WHERE name = 'unclosed", 1, 31, "unclosed quote"),
    ("SELECT nope FROM t ORDER BY v <-> [1,2,3] LIMIT 2", 1, 8, "unknown column 'nope'"),
    ("SELECT id FROM t ORDER BY v <-> [1,2] LIMIT 2", 1, 34, "3"),
    ("SELECT id FROM t ORDER BY v <-> $3 LIMIT 2", 1, 33, "parameter $3"),
])
def test_errors_carry_line_and_column(db, sql, line, column, fragment):
    with pytest.raises(QueryError) as e:
        db.sql(sql, [[1, 2, 3], 1])
    assert (e.value.line, e.value.column) == (line, column), str(e.value)
    assert fragment in str(e.value)
    assert f"line {line}, column {column}" in str(e.value)


def test_errors_name_what_is_unsupported(db):
    with pytest.raises(QueryError, match="exactly one statement"):
        db.sql("SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match="unsupported statement"):
        db.sql("VACUUM")
    with pytest.raises(QueryError, match="parameter"):
        db.sql("SELECT id FROM t WHERE price < $1")
    with pytest.raises(QueryError, match="mix of"):
        db.sql("SELECT id FROM t WHERE price < $1 AND price > ?", [1, 2])
    with pytest.raises(QueryError, match="unknown column type 'BLOB'"):
        db.sql("CREATE TABLE z (id BIGINT PRIMARY KEY, b BLOB)")
    with pytest.raises(QueryError, match="unknown vector metric"):
        db.sql("CREATE TABLE z (id BIGINT PRIMARY KEY, v VECTOR(3) USING hamming)")
    with pytest.raises(QueryError, match="does not exist|unknown table"):
        db.sql("SELECT * FROM missing_table")
    with pytest.raises(QueryError, match="Permission|disabled"):      # no file access
        db.sql("SELECT * FROM read_csv('/etc/hostname')")
    with pytest.raises(QueryError, match="LIMIT must be a non-negative integer"):
        db.sql("SELECT id FROM t ORDER BY v <-> [1,2,3] LIMIT $1", [1.5])


def test_relational_queries_run_in_duckdb(db):
    ids, price, m = _arrays(db)
    got = db.sql("SELECT count(*) AS n, round(sum(price), 6) AS s FROM t WHERE price > 2")
    assert got.column("n").to_pylist() == [int((price > 2).sum())]
    assert got.column("s")[0].as_py() == pytest.approx(price[price > 2].sum())
    got = db.sql("SELECT a.id FROM t a JOIN t b ON a.id = b.id + 1 WHERE b.price < 1 ORDER BY 1")
    want = sorted(int(i) + 1 for i in ids[price < 1] if i + 1 in set(ids.tolist()))
    assert got.column("id").to_pylist() == want


def test_cli_sql_and_shell(db, tmp_path):
    path = str(db.path)
    env = dict(os.environ, UNIDB_HISTORY=str(tmp_path / "hist"))
    # The database is open in this process (writer lock), so the CLI reads it read-only.
    r = subprocess.run([sys.executable, "-m", "unidb.sql", path, "--read-only",
                        "SELECT id, v <-> $1 AS d FROM t ORDER BY d LIMIT 3", "-p", "[0,0,0]"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "(3 rows)" in r.stdout and r.stdout.splitlines()[0].split() == ["id", "|", "d"]
    from unidb.sql.cli import shell
    out = io.StringIO()
    shell(db, io.StringIO(".tables\nSELECT count(*) AS n\n  FROM t;\nSELEC 1;\n.quit\n"), out)
    text = out.getvalue()
    assert "t\n" in text and "40" in text and "error: QueryError" in text
