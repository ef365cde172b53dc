"""Which SQL a read key may run: queries only. SQL has DDL and DML (CREATE/DROP/INSERT/UPDATE/
DELETE) and DuckDB statements that change the connection (COPY, ATTACH, INSTALL/LOAD, SET,
PRAGMA, SELECT ... INTO), so the role POST /sql needs depends on the statement.

The decision is an allowlist over the *parsed* statement — the very tree `db.sql` runs, from
the same parser and cache (`unidb.sql.is_read_only`): one query (SELECT, a set operation, or
EXPLAIN of one) with no statement nested inside. Anything else, including text that does not
parse, needs an admin key. Behind it, the relational engine itself runs nothing DuckDB does
not classify as a SELECT (unidb/sql/relational.py), for every key.
"""
from __future__ import annotations


def sql_is_read_only(query: str) -> bool:
    """Whether a read key may run `query` (one statement that only reads)."""
    from unidb.sql import is_read_only
    return is_read_only(query)
