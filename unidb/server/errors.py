"""unidb errors <-> HTTP now live in unidb/protocol/errors.py, which the remote client shares
without importing the server; re-exported here for code written against the old name."""
from unidb.protocol.errors import STATUS, error_body, error_from_body, status_of

__all__ = ["STATUS", "status_of", "error_body", "error_from_body"]
