"""Which SQL a read key may run: queries only. SQL has DDL and DML (CREATE/DROP/INSERT/UPDATE/
DELETE), so the read role of POST /sql depends on the statement, decided here by an allowlist.
"""
from __future__ import annotations

import re

# Statement types a read key may run; anything else (DDL, DML, COPY, ATTACH, SET, PRAGMA,
# whatever sqlglot cannot parse) needs an admin key. An allowlist: unknown means write.
_EXPLAIN = re.compile(r"^\s*explain(\s+analyze)?\s+", re.IGNORECASE)


def sql_is_read_only(query: str) -> bool:
    """Whether `query` only reads (the SQL module's own `is_read_only` when it has one)."""
    try:
        import unidb.sql as usql
        hook = getattr(usql, "is_read_only", None)
    except ImportError:
        hook = None
    if hook is not None:
        return bool(hook(query))
    import sqlglot
    from sqlglot import exp
    try:
        from unidb.sql.parser import UnidbDialect as dialect
    except ImportError:
        dialect = "duckdb"
    writes = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter,
              exp.Command, exp.Merge, exp.Copy, exp.Set, exp.Pragma, exp.Attach, exp.Detach,
              exp.Use, exp.TruncateTable)
    try:
        trees = sqlglot.parse(_EXPLAIN.sub("", query, count=1), read=dialect)
    except Exception:  # noqa: BLE001 - not understood: treat as a write
        return False
    trees = [t for t in trees if t is not None]
    reads = (exp.Select, exp.Union, exp.Intersect, exp.Except)
    return bool(trees) and all(isinstance(t, reads) and t.find(*writes) is None for t in trees)
