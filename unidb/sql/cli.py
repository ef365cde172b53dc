"""`unidb sql PATH "query"` (print the result) and `unidb shell PATH` (interactive SQL).

`register(subparsers)` adds both to the `unidb` command (unidb/cli.py); `python -m unidb.sql
PATH ["query"]` runs them without it. Parameters are given as JSON: `--param '[0.1, 0.2]'`.
The shell reads statements ending in `;` (several lines allowed), keeps readline history in
~/.unidb_history ($UNIDB_HISTORY overrides), and knows `.tables`, `.schema T`, `.help`, `.quit`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from unidb.errors import UnidbError

DEFAULT_MAX_ROWS = 100         # rows printed before "... N more rows" (a terminal, not a file)
MAX_CELL_CHARS = 48            # a 256-d vector prints as its first values and its length
HISTORY_ENV = "UNIDB_HISTORY"
HISTORY_FILE = "~/.unidb_history"
HISTORY_LENGTH = 10_000
FORMATS = ("table", "csv", "json")


def register(subparsers) -> None:
    """Add the `sql` and `shell` commands to an argparse subparsers object."""
    s = subparsers.add_parser("sql", help="run one SQL statement and print its result")
    _sql_arguments(s)
    s.set_defaults(func=cmd_sql)
    sh = subparsers.add_parser("shell", help="interactive SQL shell")
    sh.add_argument("path", help="database folder")
    sh.add_argument("--read-only", action="store_true", help="open beside a writer process")
    sh.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
    sh.set_defaults(func=cmd_shell)


def _sql_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("path", help="database folder")
    s.add_argument("query", help="one SQL statement (parameters $1..$n or ?)")
    s.add_argument("--param", "-p", action="append", default=[], metavar="JSON",
                   help="a parameter value as JSON (repeat for $1, $2, ...): 5, 'x', [0.1, 0.2]")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("--read-only", action="store_true", help="open beside a writer process")
    s.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)


def _param(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text            # a bare word is a string parameter


def _open(path: str, read_only: bool, create: bool = False):
    import unidb
    # A typo in PATH must not silently create an empty database; CREATE TABLE may make one.
    if not create and not str(path).startswith(("http://", "https://")) and \
            not Path(path).exists():
        raise UnidbError(f"no database at {path} (a CREATE TABLE statement creates one)")
    return unidb.connect(path, read_only=read_only)


def cmd_sql(args) -> int:
    create = args.query.lstrip().upper().startswith("CREATE TABLE")
    db = _open(args.path, args.read_only, create=create)
    try:
        result = db.sql(args.query, [_param(p) for p in args.param])
        write(result, sys.stdout, args.format, args.max_rows)
    finally:
        db.close()
    return 0


def write(result: pa.Table, out: TextIO, fmt: str = "table",
          max_rows: int = DEFAULT_MAX_ROWS) -> None:
    """Print an Arrow result as an aligned table, CSV or JSON lines."""
    if fmt == "json":
        for row in result.to_pylist():
            out.write(json.dumps(row, default=str) + "\n")
        return
    if fmt == "csv":
        import csv
        w = csv.writer(out)
        w.writerow(result.column_names)
        for row in result.to_pylist():
            w.writerow([row[c] if not isinstance(row[c], (list, dict)) else json.dumps(row[c])
                        for c in result.column_names])
        return
    out.write(format_table(result, max_rows) + "\n")


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        s = f"{v:.6g}"
    elif isinstance(v, list):
        head = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v[:4])
        s = f"[{head}{', ...' if len(v) > 4 else ''}]" + (f" ({len(v)})" if len(v) > 4 else "")
    else:
        s = str(v)
    s = s.replace("\n", " ")
    return s if len(s) <= MAX_CELL_CHARS else s[:MAX_CELL_CHARS - 3] + "..."


def format_table(result: pa.Table, max_rows: int = DEFAULT_MAX_ROWS) -> str:
    """An aligned text table with a row count footer."""
    names = result.column_names
    shown = result.slice(0, max_rows).to_pylist() if names else []
    rows = [[_cell(r[i] if isinstance(r, list) else list(r.values())[i])
             for i in range(len(names))] for r in shown]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(n.ljust(w) for n, w in zip(names, widths)), line] if names else []
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    more = result.num_rows - len(shown)
    tail = f"({result.num_rows} row{'s' if result.num_rows != 1 else ''}"
    out.append(tail + (f", {more} not shown)" if more > 0 else ")"))
    return "\n".join(out)


# ----------------------------------------------------------------------------- shell


HELP = """Statements end with ';' and may span lines. Parameters are not available here: write
vectors as literals, e.g. ORDER BY img <-> [0.1, 0.2, ...] LIMIT 10.
  .tables          list tables           .schema TABLE   show a table's columns
  .format FORMAT   table | csv | json    .help           this text
  .quit            leave (or Ctrl-D)"""


def _history_path() -> Path:
    return Path(os.path.expanduser(os.environ.get(HISTORY_ENV) or HISTORY_FILE))


def _setup_readline():
    try:
        import readline
    except ImportError:            # not on every platform: the shell works without history
        return None
    path = _history_path()
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(HISTORY_LENGTH)
    return readline, path


def cmd_shell(args) -> int:
    db = _open(args.path, args.read_only)
    hist = _setup_readline() if sys.stdin.isatty() else None
    try:
        return shell(db, sys.stdin, sys.stdout, args.max_rows, interactive=sys.stdin.isatty())
    finally:
        if hist is not None:
            readline, path = hist
            try:
                readline.write_history_file(path)
            except OSError:
                pass
        db.close()


def shell(db, inp: TextIO, out: TextIO, max_rows: int = DEFAULT_MAX_ROWS,
          interactive: bool = False) -> int:
    """Read statements from `inp` until EOF or .quit; print results and errors to `out`."""
    fmt = "table"
    buf: list[str] = []
    if interactive:
        out.write(f"unidb SQL shell on {db.path} — .help for help\n")
    while True:
        prompt = ("unidb> " if not buf else "   ...> ") if interactive else ""
        try:
            line = input(prompt) if interactive else inp.readline()
        except EOFError:
            break
        except KeyboardInterrupt:
            buf.clear()
            out.write("\n")
            continue
        if not interactive and line == "":
            break
        line = line.rstrip("\n")
        if not buf and line.strip().startswith("."):
            cmd, *rest = line.strip().split()
            if cmd in (".quit", ".exit"):
                break
            if cmd == ".help":
                out.write(HELP + "\n")
            elif cmd == ".tables":
                out.write("\n".join(db.table_names()) + "\n")
            elif cmd == ".schema" and rest:
                try:
                    out.write(repr(db.open_table(rest[0]).schema) + "\n")
                except UnidbError as e:
                    out.write(f"error: {e}\n")
            elif cmd == ".format" and rest and rest[0] in FORMATS:
                fmt = rest[0]
            else:
                out.write(f"unknown command {line.strip()!r}; .help lists them\n")
            continue
        buf.append(line)
        text = "\n".join(buf).strip()
        if not text.endswith(";"):
            if not text:
                buf.clear()
            continue
        buf.clear()
        statement = text.rstrip(";").strip()
        if not statement:
            continue
        try:
            write(db.sql(statement), out, fmt, max_rows)
        except UnidbError as e:
            out.write(f"error: {type(e).__name__}: {e}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m unidb.sql PATH "query"` runs one statement; without a query, the shell."""
    argv = list(sys.argv[1:] if argv is None else argv)
    positional = [a for a in argv if not a.startswith("-")]
    p = argparse.ArgumentParser(prog="python -m unidb.sql")
    if len(positional) >= 2:
        _sql_arguments(p)
        func = cmd_sql
    else:
        p.add_argument("path")
        p.add_argument("--read-only", action="store_true")
        p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
        func = cmd_shell
    args = p.parse_args(argv)
    try:
        return func(args)
    except UnidbError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


__all__ = ["register", "main", "shell", "format_table", "write"]
