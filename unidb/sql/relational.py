"""The relational engine: DuckDB over Arrow views of unidb tables, one connection per thread.

A table is registered as the Arrow table `Table.to_arrow()` returns — record batches that are
slices of the memory-mapped segments — so DuckDB scans unidb's memory without a copy (and,
with projection pushdown, never touches a vector column a query does not name). Registrations
live for one statement and are dropped after it, so no statement sees another's snapshot.
"""
from __future__ import annotations

import threading

import pyarrow as pa

from unidb.errors import QueryError

try:                                    # duckdb is a runtime dependency; fail clearly if absent
    import duckdb
except ImportError:                     # pragma: no cover - packaging error
    duckdb = None

_local = threading.local()


def connection():
    """This thread's DuckDB connection (in-memory; it only ever sees registered Arrow data)."""
    if duckdb is None:
        raise QueryError("SQL beyond vector search needs the duckdb package (pip install duckdb)")
    con = getattr(_local, "con", None)
    if con is None:
        # SQL sees unidb's tables and nothing else: no Python variable of the caller resolved
        # as a table, no files read or written, no extensions loaded (db.sql may be exposed
        # through the server to read-only keys).
        con = duckdb.connect(":memory:", config={"enable_external_access": False,
                                                 "python_enable_replacements": False})
        _local.con = con
    return con


class Session:
    """The Arrow relations one statement registers; unregisters them all on close."""

    def __init__(self):
        self.con = connection()
        self.names: list[str] = []

    def register(self, name: str, data: pa.Table) -> None:
        self.con.register(name, data)
        self.names.append(name)

    def run(self, sql: str) -> pa.Table:
        """Run one query; anything DuckDB would not classify as a SELECT is refused unrun,
        so no statement leaves a table, view, macro or setting in the shared connection."""
        if not sql.strip():
            return pa.table({})
        try:
            kinds = [s.type for s in self.con.extract_statements(sql)]
            if kinds != [duckdb.StatementType.SELECT]:
                raise QueryError(f"the relational engine runs one SELECT, and this statement "
                                 f"is {', '.join(k.name for k in kinds) or 'empty'}: "
                                 f"{_first_line(sql)[:200]}")
            return self.con.sql(sql).to_arrow_table()
        except duckdb.Error as e:
            raise QueryError(f"{type(e).__name__}: {_first_line(str(e))}") from None

    def plan_text(self, sql: str) -> str:
        try:
            rows = self.con.sql("EXPLAIN " + sql).fetchall()
        except duckdb.Error as e:
            return f"(DuckDB could not explain: {_first_line(str(e))})"
        return "\n".join(str(r[-1]) for r in rows)

    def close(self) -> None:
        for name in self.names:
            try:
                self.con.unregister(name)
            except Exception:  # noqa: BLE001 - best effort: the view may never have been made
                pass
        self.names.clear()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(msg: str) -> str:
    lines = [x for x in msg.strip().splitlines() if x.strip()]
    return " ".join(lines[:3]) if lines else msg


__all__ = ["Session", "connection"]
