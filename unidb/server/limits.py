"""Request limits of `unidb serve`: what one request may ask for, with sane defaults.

Every limit is checked before anything is changed, so a request over a limit fails with
`LimitError` (HTTP 413; 504 for the query timeout) and leaves the database as it was.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from unidb.errors import LimitError

# Defaults: generous for real applications, small enough that one request cannot exhaust a
# 2-core server. JSON costs ~10x the binary size for float vectors, so 64 MiB of body is about
# 50k rows of 128-d vectors as lists, 4x that with base64 vectors.
DEFAULT_MAX_K = 10_000                 # rows per search (limit=)
DEFAULT_MAX_BATCH_ROWS = 100_000       # rows per add / upsert request
DEFAULT_MAX_BODY_BYTES = 64 << 20      # request body
DEFAULT_MAX_FILTER_CHARS = 8_192       # filter text (or its JSON tree) per request
DEFAULT_QUERY_TIMEOUT_S = 30.0         # reads (search, scans, SQL); writes are never cut short
DEFAULT_MAX_RESULT_ROWS = 1_000_000    # rows one response may carry (scans, range searches)
DEFAULT_MAX_QUERIES = 1_024            # query vectors in one search request


@dataclass
class Limits:
    max_k: int = DEFAULT_MAX_K
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_filter_chars: int = DEFAULT_MAX_FILTER_CHARS
    query_timeout_s: float = DEFAULT_QUERY_TIMEOUT_S
    max_result_rows: int = DEFAULT_MAX_RESULT_ROWS
    max_queries: int = DEFAULT_MAX_QUERIES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Limits":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown limit(s) {bad}; known: {sorted(known)}")
        return cls(**d)

    # -- checks ----------------------------------------------------------------------------
    def check_k(self, k: Any) -> None:
        if isinstance(k, int) and not isinstance(k, bool) and k > self.max_k:
            raise LimitError(f"limit {k} exceeds the server's max_k {self.max_k}; ask for "
                             f"fewer rows or raise --max-k")

    def check_batch(self, rows: int) -> None:
        if rows > self.max_batch_rows:
            raise LimitError(f"batch of {rows} rows exceeds the server's max_batch_rows "
                             f"{self.max_batch_rows}; split it into smaller batches")

    def check_filter(self, text: str | None) -> None:
        if text is not None and len(text) > self.max_filter_chars:
            raise LimitError(f"filter of {len(text)} characters exceeds the server's "
                             f"max_filter_chars {self.max_filter_chars}")

    def check_result(self, rows: int) -> None:
        if rows > self.max_result_rows:
            raise LimitError(f"result of {rows} rows exceeds the server's max_result_rows "
                             f"{self.max_result_rows}; add a filter, a limit or a narrower "
                             f"distance range")

    def check_queries(self, n: int) -> None:
        if n > self.max_queries:
            raise LimitError(f"{n} query vectors in one request exceed the server's "
                             f"max_queries {self.max_queries}")

    def body_error(self, size: int) -> LimitError:
        return LimitError(f"request body of {size} bytes exceeds the server's max_body_bytes "
                          f"{self.max_body_bytes}")
