"""The error classes of unidb's public contract (see docs/errors.md).

Every error a user can trigger is one of these, with a message naming the offending
value and what to do. A rejected write changes nothing.
"""


class UnidbError(Exception):
    """Base class of every unidb error."""


class SchemaError(UnidbError):
    """A schema is malformed, or a table/column definition conflicts with one stored."""


class ValidationError(UnidbError):
    """Input rows are invalid: wrong dimension, NaN/inf, wrong type, unknown column,
    duplicate primary key in `add`, missing non-nullable value, oversized value."""


class NotFoundError(UnidbError):
    """A table, column, index or key does not exist."""


class QueryError(UnidbError):
    """A filter or SQL text is malformed; the message carries the position of the fault."""

    def __init__(self, message: str, position: int | None = None, line: int | None = None,
                 column: int | None = None):
        super().__init__(message)
        self.position = position
        self.line = line
        self.column = column


class LockedError(UnidbError):
    """Another process holds the writer lock of the database (the message names its pid)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


class ReadOnlyError(UnidbError):
    """A write was attempted through a read-only handle."""


class ClosedError(UnidbError):
    """A database handle, or a table obtained from it, was used after `close()` (or after
    its table was dropped). Open the database again with `unidb.connect()`."""


class CorruptionError(UnidbError):
    """A stored file failed its checksum or format check before its tail (names file and offset)."""


class StorageError(UnidbError, OSError):
    """A file operation failed (disk full, I/O error, permissions). `errno` is the OS's code.

    A write that raised this was not applied; what was acknowledged before is kept. The
    message names the file and the operation."""


class AuthError(UnidbError):
    """A request to a server lacked a valid API key, or the key's role forbids the action."""


class LimitError(UnidbError):
    """A request exceeded a configured limit (rows per batch, k, body size, ...)."""


__all__ = [
    "UnidbError", "SchemaError", "ValidationError", "NotFoundError", "QueryError",
    "LockedError", "ReadOnlyError", "ClosedError", "CorruptionError", "StorageError", "AuthError",
    "LimitError",
]
