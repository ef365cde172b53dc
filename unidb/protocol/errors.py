"""unidb errors <-> HTTP: the status each error class gets and the JSON error body.

Body: ``{"error": {"class": "ValidationError", "message": "...", "status": 422, ...}}``; the
remote client re-raises the exact class named there (and QueryError's position, LockedError's
pid), so code written against the embedded API handles remote errors unchanged.
"""
from __future__ import annotations

from typing import Any

from unidb import errors as E

# Most specific class first (isinstance order matters for subclasses).
STATUS: list[tuple[type, int]] = [
    (E.AuthError, 401),            # 403 when the key is valid but its role is not enough
    (E.NotFoundError, 404),
    (E.LockedError, 409),
    (E.SchemaError, 409),          # table exists / schema conflict
    (E.ReadOnlyError, 409),
    (E.ClosedError, 409),          # the server's handle was closed (shutting down)
    (E.LimitError, 413),           # 504 for the query timeout
    (E.ValidationError, 422),
    (E.QueryError, 422),
    (E.CorruptionError, 500),
    (E.StorageError, 503),         # the server's disk, not the request: retry later
    (E.UnidbError, 400),
]


def status_of(exc: BaseException) -> int:
    explicit = getattr(exc, "http_status", None)
    if explicit:
        return int(explicit)
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: BaseException, status: int) -> dict[str, Any]:
    if isinstance(exc, E.UnidbError):
        cls = type(exc).__name__ if hasattr(E, type(exc).__name__) else _public_base(exc)
        message = str(exc)
    else:
        cls, message = "UnidbError", "internal server error (see the server log)"
    err: dict[str, Any] = {"class": cls, "message": message, "status": status}
    for attr in ("position", "line", "column", "pid"):
        v = getattr(exc, attr, None)
        if v is not None:
            err[attr] = v
    return {"error": err}


def _public_base(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if hasattr(E, cls.__name__):
            return cls.__name__
    return "UnidbError"


def error_from_body(body: Any, status: int) -> E.UnidbError:
    """The exception a client raises for an error response."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return _by_status(status)(f"HTTP {status}: {str(body)[:500]}")
    cls = getattr(E, str(err.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, E.UnidbError)):
        cls = _by_status(status)
    message = str(err.get("message", f"HTTP {status}"))
    if cls is E.QueryError:
        return E.QueryError(message, position=err.get("position"), line=err.get("line"),
                            column=err.get("column"))
    if cls is E.LockedError:
        return E.LockedError(message, pid=err.get("pid"))
    return cls(message)


def _by_status(status: int) -> type:
    return {401: E.AuthError, 403: E.AuthError, 404: E.NotFoundError, 409: E.SchemaError,
            413: E.LimitError, 422: E.ValidationError, 503: E.StorageError,
            504: E.LimitError}.get(status, E.UnidbError)
