"""The `unidb` command: serve a database, manage API keys, move data in and out, back up.

    unidb serve PATH [--host 127.0.0.1] [--port 7878] [--no-auth] [--backup-dir DIR] [limits]
    unidb keys create PATH --role admin|read [--name NAME]   (the key is the last line printed)
    unidb keys list PATH  |  unidb keys revoke PATH KEY_ID
    unidb import PATH TABLE FILE [--schema schema.json] [--batch-size N] [--upsert]
    unidb export PATH TABLE FILE [--columns a,b] [--where FILTER]
    unidb info PATH
    unidb check PATH [--json]                  (verify every file offline; exit 1 on damage)
    unidb backup PATH DEST  |  unidb restore BACKUP PATH
    unidb openapi [--out docs/openapi.json]

PATH is a database folder, or for import/export/info/backup an http(s) URL of a server (the
key from --api-key or $UNIDB_API_KEY). Formats follow the file extension: .parquet, .csv,
.jsonl (.ndjson). `sql`/`shell` come from unidb.sql when this build has it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from unidb.errors import UnidbError

DEFAULT_BATCH_ROWS = 10_000    # rows per write while importing: one WAL record each
API_KEY_ENV = "UNIDB_API_KEY"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UnidbError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unidb", description="unidb: one database for scalar, "
                                "text, sparse and dense vector data")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    _add_keys(sub)
    _add_import_export(sub)
    _add_info(sub)
    _add_check(sub)
    _add_backup(sub)
    o = sub.add_parser("openapi", help="write the server's OpenAPI document")
    o.add_argument("--out", default="docs/openapi.json", help="file to write ('-' for stdout)")
    o.set_defaults(func=cmd_openapi)
    try:
        from unidb.sql import cli as sql_cli
    except ImportError:
        sql_cli = None
    except Exception as e:  # noqa: BLE001 - a broken optional module must not break serve
        print(f"warning: unidb.sql.cli failed to load: {e!r}", file=sys.stderr)
        sql_cli = None
    if sql_cli is not None and hasattr(sql_cli, "register"):
        sql_cli.register(sub)
    return p


# -- serve -------------------------------------------------------------------------------------
def _add_serve(sub) -> None:
    from unidb.server.limits import Limits
    d = Limits()
    s = sub.add_parser("serve", help="serve a database over HTTP")
    s.add_argument("path", help="database folder (created if missing)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7878)
    s.add_argument("--no-auth", action="store_true",
                   help="no API keys (refused unless the host is loopback)")
    s.add_argument("--backup-dir", help="folder that backup/restore over HTTP may write in")
    s.add_argument("--durability", choices=("sync", "async"), default="sync")
    s.add_argument("--log-level", default="info")
    s.add_argument("--no-access-log", action="store_true", help="no per-request log lines")
    s.add_argument("--max-k", type=int, default=d.max_k)
    s.add_argument("--max-batch-rows", type=int, default=d.max_batch_rows)
    s.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    s.add_argument("--max-filter-chars", type=int, default=d.max_filter_chars)
    s.add_argument("--query-timeout", type=float, default=d.query_timeout_s, help="seconds")
    s.add_argument("--max-result-rows", type=int, default=d.max_result_rows)
    s.add_argument("--max-queries", type=int, default=d.max_queries)
    s.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from unidb.server.app import ServerConfig
    from unidb.server.limits import Limits
    from unidb.server.serve import serve
    limits = Limits(max_k=args.max_k, max_batch_rows=args.max_batch_rows,
                    max_body_bytes=args.max_body_bytes, max_filter_chars=args.max_filter_chars,
                    query_timeout_s=args.query_timeout, max_result_rows=args.max_result_rows,
                    max_queries=args.max_queries)
    config = ServerConfig(host=args.host, port=args.port, auth=not args.no_auth, limits=limits,
                          backup_dir=Path(args.backup_dir).resolve() if args.backup_dir else None,
                          durability=args.durability, access_log=not args.no_access_log)
    config.check()
    serve(args.path, config, log_level=args.log_level)
    return 0


# -- keys --------------------------------------------------------------------------------------
def _add_keys(sub) -> None:
    k = sub.add_parser("keys", help="manage API keys of a database")
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION")
    c = ks.add_parser("create", help="create a key (printed once, as the last line)")
    c.add_argument("path")
    c.add_argument("--role", choices=("admin", "read"), required=True)
    c.add_argument("--name", default="", help="a label for the key")
    c.set_defaults(func=cmd_keys_create)
    ls = ks.add_parser("list", help="list key ids and roles")
    ls.add_argument("path")
    ls.set_defaults(func=cmd_keys_list)
    r = ks.add_parser("revoke", help="revoke a key by id")
    r.add_argument("path")
    r.add_argument("key_id")
    r.set_defaults(func=cmd_keys_revoke)


def _ensure_database(path: str) -> None:
    """Create the database folder if it does not exist yet (keys live inside it)."""
    from unidb.storage.catalog import MARKER
    if not (Path(path) / MARKER).exists():
        import unidb
        unidb.connect(path).close()


def cmd_keys_create(args) -> int:
    from unidb.server.auth import KeyStore
    _ensure_database(args.path)
    key = KeyStore(args.path).create(args.role, args.name)
    print(f"created {args.role} key {key.split('_')[1]}; store it now, it is not shown again:",
          file=sys.stderr)
    print(key)
    return 0


def cmd_keys_list(args) -> int:
    from unidb.server.auth import KeyStore
    keys = KeyStore(args.path).list()
    if not keys:
        print("no keys")
    for k in keys:
        print(f"{k['id']}  {k['role']:<5}  {k['created']}  {k['name']}")
    return 0


def cmd_keys_revoke(args) -> int:
    from unidb.server.auth import KeyStore
    KeyStore(args.path).revoke(args.key_id)
    print(f"revoked {args.key_id}")
    return 0


# -- import / export ---------------------------------------------------------------------------
def _add_import_export(sub) -> None:
    i = sub.add_parser("import", help="load rows from a Parquet, CSV or JSONL file")
    i.add_argument("path", help="database folder or server URL")
    i.add_argument("table")
    i.add_argument("file")
    i.add_argument("--schema", help="Schema JSON file: create the table if it does not exist")
    i.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_ROWS)
    i.add_argument("--upsert", action="store_true", help="replace rows with existing keys")
    i.add_argument("--api-key", help=f"for a server URL (default ${API_KEY_ENV})")
    i.add_argument("--no-progress", action="store_true")
    i.set_defaults(func=cmd_import)
    e = sub.add_parser("export", help="write a table to a Parquet, CSV or JSONL file")
    e.add_argument("path")
    e.add_argument("table")
    e.add_argument("file")
    e.add_argument("--columns", help="comma-separated columns (default all)")
    e.add_argument("--where", help="filter, e.g. \"price < 10\"")
    e.add_argument("--api-key")
    e.set_defaults(func=cmd_export)


def _connect(path: str, api_key: str | None = None):
    import unidb
    if path.startswith(("http://", "https://")):
        return unidb.connect(path, api_key=api_key or os.environ.get(API_KEY_ENV))
    return unidb.connect(path)


def _format(file: str) -> str:
    name = file.lower()
    for ext, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"),
                     (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl")):
        if name.endswith(ext):
            return fmt
    raise UnidbError(f"cannot tell the format of {file!r}: use .parquet, .csv or .jsonl")


def _batches(file: str, batch_rows: int) -> tuple[Iterator[Any], int | None]:
    """Batches of rows from `file` and the total row count when cheap to know."""
    import pyarrow as pa
    fmt = _format(file)
    if fmt == "parquet":
        import pyarrow.parquet as pq
        f = pq.ParquetFile(file)
        return (pa.Table.from_batches([b]) for b in f.iter_batches(batch_rows)), \
            f.metadata.num_rows
    if fmt == "csv":
        import pyarrow.csv as pcsv
        reader = pcsv.open_csv(file, read_options=pcsv.ReadOptions(block_size=1 << 22))
        return _rebatch(reader, batch_rows), None
    return _jsonl(file, batch_rows), None


def _rebatch(reader, batch_rows: int) -> Iterator[Any]:
    import pyarrow as pa
    pending, n = [], 0
    for b in reader:
        pending.append(b)
        n += b.num_rows
        if n >= batch_rows:
            t = pa.Table.from_batches(pending)
            while t.num_rows >= batch_rows:
                yield t.slice(0, batch_rows)
                t = t.slice(batch_rows)
            pending, n = t.to_batches(), t.num_rows
    if n:
        yield pa.Table.from_batches(pending)


def _jsonl(file: str, batch_rows: int) -> Iterator[list[dict]]:
    rows: list[dict] = []
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UnidbError(f"{file}:{lineno}: not JSON: {e}") from None
            if len(rows) >= batch_rows:
                yield rows
                rows = []
    if rows:
        yield rows


def _fix_text_columns(batch: Any, schema) -> Any:
    """CSV cells hold vectors and sparse vectors as JSON text: decode those columns."""
    import pyarrow as pa
    if not isinstance(batch, pa.Table):
        return batch
    fix = [n for n in batch.column_names if n in schema
           and schema[n].kind in ("vector", "sparse") and pa.types.is_string(batch.column(n).type)]
    if not fix:
        return batch
    cols: dict[str, Any] = {n: batch.column(n) for n in batch.column_names}
    for n in fix:
        values = [None if v is None else json.loads(v) for v in cols[n].to_pylist()]
        if schema[n].kind == "sparse":       # JSON object keys are strings; term ids are ints
            values = [{int(k): x for k, x in v.items()}
                      if isinstance(v, dict) and "indices" not in v else v for v in values]
        cols[n] = values
    return cols


def cmd_import(args) -> int:
    from tqdm import tqdm
    if args.batch_size < 1:
        raise UnidbError("--batch-size must be positive")
    db = _connect(args.path, args.api_key)
    try:
        if args.table in db.table_names():
            t = db.open_table(args.table)
        elif args.schema:
            from unidb.schema import Schema
            with open(args.schema, encoding="utf-8") as f:
                t = db.create_table(args.table, Schema.from_json(json.load(f)))
        else:
            raise UnidbError(f"table {args.table!r} does not exist; pass --schema FILE "
                             f"(Schema JSON) to create it")
        batches, total = _batches(args.file, args.batch_size)
        done = 0
        with tqdm(total=total, unit="rows", disable=args.no_progress, file=sys.stderr) as bar:
            for batch in batches:
                batch = _fix_text_columns(batch, t.schema)
                n = len(batch) if isinstance(batch, list) else _num_rows(batch)
                if args.upsert:
                    t.upsert(batch)
                else:
                    t.add(batch)
                done += n
                bar.update(n)
        print(f"imported {done} rows into {args.table}")
    finally:
        db.close()
    return 0


def _num_rows(batch: Any) -> int:
    if hasattr(batch, "num_rows"):
        return batch.num_rows
    return len(next(iter(batch.values()))) if batch else 0


def cmd_export(args) -> int:
    import pyarrow as pa
    db = _connect(args.path, args.api_key)
    try:
        t = db.open_table(args.table)
        cols = args.columns.split(",") if args.columns else None
        table = t.to_arrow(columns=cols, where=args.where)
    finally:
        db.close()
    fmt = _format(args.file)
    if fmt == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(table, args.file)
    elif fmt == "csv":
        import pyarrow.csv as pcsv
        flat = {}
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_nested(col.type):        # vectors, sparse: JSON text in a cell
                col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()],
                               type=pa.string())
            flat[name] = col
        pcsv.write_csv(pa.table(flat), args.file)
    else:
        with open(args.file, "w", encoding="utf-8") as f:
            for row in table.to_pylist():
                f.write(json.dumps(row) + "\n")
    print(f"exported {table.num_rows} rows from {args.table} to {args.file}")
    return 0


# -- info --------------------------------------------------------------------------------------
def _add_info(sub) -> None:
    i = sub.add_parser("info", help="tables, rows, indexes and disk use of a database")
    i.add_argument("path")
    i.add_argument("--api-key")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)


def database_info(db) -> dict:
    tables = {}
    for name in db.table_names():
        t = db.open_table(name)
        st = t.stats()
        tables[name] = {"rows": st.get("rows", len(t)), "disk_bytes": st.get("disk_bytes"),
                        "segments": st.get("segments"), "indexes": t.list_indexes(),
                        "columns": {c: repr(t.schema[c]) for c in t.schema.names()}}
    return {"tables": tables}


def cmd_info(args) -> int:
    path = args.path
    if not path.startswith(("http://", "https://")):
        from unidb.storage.catalog import MARKER
        if not (Path(path) / MARKER).exists():
            raise UnidbError(f"no unidb database at {path}")
        # A running server holds the writer lock: read beside it.
        import unidb
        from unidb.errors import LockedError
        try:
            db = unidb.connect(path)
        except LockedError:
            db = unidb.connect(path, read_only=True)
    else:
        db = _connect(path, args.api_key)
    try:
        info = database_info(db)
    finally:
        db.close()
    if not path.startswith(("http://", "https://")):
        info["disk_bytes"] = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(f"database {path}" + (f"  ({_size(info['disk_bytes'])} on disk)"
                                if "disk_bytes" in info else ""))
    for name, t in info["tables"].items():
        print(f"  table {name}: {t['rows']:,} rows, {_size(t['disk_bytes'] or 0)}, "
              f"{t['segments']} segments")
        print("    columns: " + ", ".join(f"{c} {r}" for c, r in t["columns"].items()))
        for col, d in (t["indexes"] or {}).items():
            print(f"    index on {col}: {d}")
    if not info["tables"]:
        print("  (no tables)")
    return 0


# -- check -------------------------------------------------------------------------------------
def _add_check(sub) -> None:
    c = sub.add_parser("check", help="verify every file of a database offline (checksums, "
                                     "WAL, manifests, index snapshots)")
    c.add_argument("path")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_check)


def cmd_check(args) -> int:
    from unidb.storage.check import check_database
    report = check_database(args.path)
    if args.json:
        print(json.dumps({"path": str(report.path), "ok": report.ok,
                          "verified": report.verified, "notes": report.notes,
                          "problems": [{"file": f, "problem": m} for f, m in report.problems]},
                         indent=1))
    else:
        print(f"checked {args.path}: {len(report.verified)} files verified, "
              f"{len(report.problems)} problems")
        for note in report.notes:
            print(f"  note: {note}")
        for f, m in report.problems:
            print(f"  PROBLEM {f}: {m}")
        print("ok" if report.ok else "DAMAGED: restore from a backup (index snapshots are "
                                     "rebuilt from the rows on open)")
    return 0 if report.ok else 1


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# -- backup / restore --------------------------------------------------------------------------
def _add_backup(sub) -> None:
    b = sub.add_parser("backup", help="consistent copy of a database (also while it is written)")
    b.add_argument("path", help="database folder, or a server URL (DEST is then a name inside "
                                "the server's --backup-dir)")
    b.add_argument("dest")
    b.add_argument("--api-key")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="copy a backup into a new database folder")
    r.add_argument("backup")
    r.add_argument("path")
    r.set_defaults(func=cmd_restore)


def cmd_backup(args) -> int:
    if args.path.startswith(("http://", "https://")):
        db = _connect(args.path, args.api_key)
        try:
            info = db.backup(args.dest)
        finally:
            db.close()
    else:
        import unidb
        from unidb.errors import LockedError
        try:
            db = unidb.connect(args.path)
        except LockedError as e:
            raise UnidbError(f"{e}. If `unidb serve` has it open, back up through the "
                             f"server: unidb backup http://HOST:PORT NAME (with --backup-dir "
                             f"set)") from None
        try:
            info = db.backup(args.dest)
        finally:
            db.close()
    rows = sum(t["rows"] for t in info["tables"].values())
    print(f"backed up {len(info['tables'])} tables ({rows:,} rows) to {info['path']}")
    return 0


def cmd_restore(args) -> int:
    from unidb.storage import backup as bk
    info = bk.restore(args.backup, args.path)
    print(f"restored {len(info.get('tables', {}))} tables into {info['path']}")
    return 0


# -- openapi -----------------------------------------------------------------------------------
def openapi_text() -> str:
    from unidb.server.app import openapi_document
    return json.dumps(openapi_document(), indent=1, sort_keys=True) + "\n"


def cmd_openapi(args) -> int:
    text = openapi_text()
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
