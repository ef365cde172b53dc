"""The `unidb` command: keys, import/export (Parquet, CSV, JSONL), info, backup/restore, and
the safety checks of `serve`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import unidb
from unidb.cli import main
from unidb.server.auth import KeyStore

from conftest import REPO, items_rows, items_schema

DIM = 4
# A process that holds a database open for writing until its stdin closes.
HOLDER = "import sys, unidb\ndb = unidb.connect(sys.argv[1])\nprint('READY', flush=True)\n" \
         "sys.stdin.read()\n"


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_keys_create_list_revoke(tmp_path, capsys):
    path = tmp_path / "db.unidb"
    rc, out, _ = _run(capsys, "keys", "create", path, "--role", "admin", "--name", "ops")
    assert rc == 0
    key = out.strip().splitlines()[-1]                      # the key is the last line
    assert key.startswith("udb_")
    assert KeyStore(path).verify(key).role == "admin"
    rc, out, _ = _run(capsys, "keys", "create", path, "--role", "read")
    read = out.strip().splitlines()[-1]
    rc, out, _ = _run(capsys, "keys", "list", path)
    kid = key.split("_")[1]
    assert kid in out and "ops" in out and read.split("_")[1] in out
    assert key.split("_", 2)[2] not in out
    assert _run(capsys, "keys", "revoke", path, kid)[0] == 0
    with pytest.raises(unidb.AuthError):
        KeyStore(path).verify(key)
    rc, _, err = _run(capsys, "keys", "revoke", path, kid)
    assert rc == 1 and "NotFoundError" in err
    assert unidb.connect(path).table_names() == []          # keys made the database too


def _schema_file(tmp_path):
    p = tmp_path / "schema.json"
    p.write_text(json.dumps(unidb.Schema(items_schema(DIM)).to_json()))
    return p


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_import_export_roundtrip(tmp_path, capsys, ext):
    path = tmp_path / "db.unidb"
    rows = items_rows(57, DIM)
    table = unidb.Schema(items_schema(DIM)).to_batch(rows)
    src = tmp_path / f"in.{ext}"
    if ext == "parquet":
        pq.write_table(pa.Table.from_batches([table]), src)
    else:
        lines = pa.Table.from_batches([table]).to_pylist()
        if ext == "jsonl":
            src.write_text("".join(json.dumps(r) + "\n" for r in lines))
        else:
            import csv
            with open(src, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(lines[0]))
                w.writeheader()
                for r in lines:
                    w.writerow({**r, "emb": json.dumps(r["emb"]),
                                "year": "" if r["year"] is None else r["year"]})
    rc, out, err = _run(capsys, "import", path, "items", src, "--schema", _schema_file(tmp_path),
                        "--batch-size", "10")
    assert rc == 0, err
    assert "imported 57 rows" in out
    db = unidb.connect(path)
    t = db.open_table("items")
    assert len(t) == 57
    got = t.get([5, 40])
    np.testing.assert_allclose(np.array(got.column("emb").to_pylist()), rows["emb"][[5, 40]],
                               rtol=1e-6)
    assert got.column("year").to_pylist() == [rows["year"][5], rows["year"][40]]
    db.close()
    # Import again without --upsert: duplicate keys reject the batch; with --upsert it works.
    rc, _, err = _run(capsys, "import", path, "items", src)
    assert rc == 1 and "ValidationError" in err
    assert _run(capsys, "import", path, "items", src, "--upsert")[0] == 0
    dst = tmp_path / f"out.{ext}"
    rc, out, _ = _run(capsys, "export", path, "items", dst, "--where", "price < 250")
    assert rc == 0
    n = int((rows["price"] < 250).sum())
    assert f"exported {n} rows" in out
    # The export imports into a fresh table with the same rows.
    rc, _, err = _run(capsys, "import", path, "again", dst, "--schema", _schema_file(tmp_path))
    assert rc == 0, err
    db = unidb.connect(path)
    a = db.open_table("items").to_arrow(where="price < 250").sort_by("id")
    b = db.open_table("again").to_arrow().sort_by("id")
    assert a.equals(b)
    db.close()


def test_import_needs_table_or_schema(tmp_path, capsys):
    src = tmp_path / "x.jsonl"
    src.write_text('{"id": 1}\n')
    rc, _, err = _run(capsys, "import", tmp_path / "db.unidb", "nope", src)
    assert rc == 1 and "--schema" in err
    rc, _, err = _run(capsys, "import", tmp_path / "db.unidb", "nope", tmp_path / "x.txt")
    assert rc == 1


def test_info_backup_restore(tmp_path, capsys):
    path = tmp_path / "db.unidb"
    db = unidb.connect(path)
    t = db.create_table("items", items_schema(DIM))
    t.add(items_rows(33, DIM))
    t.create_index("price")
    db.close()
    rc, out, _ = _run(capsys, "info", path)
    assert rc == 0 and "items: 33 rows" in out and "index on price" in out
    rc, out, _ = _run(capsys, "info", path, "--json")
    info = json.loads(out)
    assert info["tables"]["items"]["rows"] == 33 and info["disk_bytes"] > 0
    rc, out, _ = _run(capsys, "backup", path, tmp_path / "bk")
    assert rc == 0 and "33 rows" in out
    rc, out, _ = _run(capsys, "restore", tmp_path / "bk", tmp_path / "restored")
    assert rc == 0
    r = unidb.connect(tmp_path / "restored")
    assert len(r.open_table("items")) == 33
    r.close()
    rc, _, err = _run(capsys, "restore", tmp_path / "bk", tmp_path / "restored")
    assert rc == 1 and "empty" in err
    # Another process holds the writer lock, like a running server (a second connect in this
    # process would share the database instead).
    held = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "READY"
        rc, _, err = _run(capsys, "backup", path, tmp_path / "bk2")
        assert rc == 1 and "through the server" in err
        assert _run(capsys, "info", path)[0] == 0            # read-only beside the writer
    finally:
        held.stdin.close()
        held.wait(timeout=60)


def test_serve_refuses_no_auth_on_public_host(tmp_path):
    p = subprocess.run([sys.executable, "-m", "unidb.cli", "serve", str(tmp_path / "db"),
                        "--host", "0.0.0.0", "--no-auth"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1
    assert "--no-auth is refused" in p.stderr
    assert not (tmp_path / "db").exists()


def test_remote_import_export(tmp_path, capsys, monkeypatch):
    from unidb.server.app import ServerConfig
    from unidb.server.testing import serve_in_thread
    path = tmp_path / "db.unidb"
    unidb.connect(path).close()
    key = KeyStore(path).create("admin")
    src = tmp_path / "in.jsonl"
    lines = pa.Table.from_batches([unidb.Schema(items_schema(DIM)).to_batch(
        items_rows(25, DIM))]).to_pylist()
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    monkeypatch.setenv("UNIDB_API_KEY", key)
    with serve_in_thread(path, ServerConfig(port=0, access_log=False)) as url:
        rc, _, err = _run(capsys, "import", url, "items", src, "--schema",
                          _schema_file(tmp_path), "--batch-size", "7")
        assert rc == 0, err
        rc, out, _ = _run(capsys, "export", url, "items", tmp_path / "out.parquet")
        assert rc == 0 and "exported 25 rows" in out
        rc, out, _ = _run(capsys, "info", url)
        assert rc == 0 and "items: 25 rows" in out
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 25
