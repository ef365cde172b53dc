"""`RemoteDatabase`, `RemoteTable`, `RemoteSearchBuilder`: the embedded API, spoken over HTTP.

Each method sends one request to `unidb serve` and returns what the embedded method returns
(pyarrow tables, dicts, counts). Errors come back as the same `unidb.errors` classes. A
search is built by the embedded `SearchBuilder` itself (so mistakes raise at the same call as
embedded, checked against the table's schema) and only its executor differs: it POSTs the
`SearchRequest` as JSON and reads the rows back into a `SearchResult`. A builder method added
later works remotely with no client or server change, since every method makes a request.
"""
from __future__ import annotations

import http.client
import json
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from unidb.api.search import SearchBuilder, check_search_arguments
from unidb.errors import ClosedError, UnidbError, ValidationError
from unidb.protocol import wire
from unidb.protocol.errors import error_from_body
from unidb.query.request import SearchRequest
from unidb.query.result import QUERY, SearchResult
from unidb.schema import Schema

# Seconds a request may take on the wire (the server has its own query timeout).
DEFAULT_TIMEOUT_S = 120.0


class RemoteDatabase:
    """A database served by `unidb serve`; obtain it with `unidb.connect("http://...")`."""

    def __init__(self, url: str, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, vectors: str = "b64",
                 transport: Any = None, verify: Any = True):
        """transport: an httpx transport to send requests through (e.g. a TestClient's);
        by default a keep-alive `http.client` connection per thread."""
        from unidb.client.transport import HttpxTransport, StdlibTransport
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._vectors = vectors
        if transport is None:
            self._http = StdlibTransport(self.url, headers, timeout, verify)
        else:
            self._http = HttpxTransport(self.url, headers, timeout, transport, verify)
        self._closed = False

    # -- transport -------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        if self._closed:
            raise ClosedError(f"connection to {self.url} is closed")
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            status, ctype, content = self._http.request(method, path, data, params)
        except (OSError, http.client.HTTPException) as e:
            raise UnidbError(f"cannot reach unidb server at {self.url}: {e!r}") from None
        except Exception as e:  # noqa: BLE001 - httpx errors when an httpx transport is used
            if type(e).__module__.startswith("httpx"):
                raise UnidbError(f"cannot reach unidb server at {self.url}: {e!r}") from None
            raise
        is_json = ctype.startswith("application/json")
        if status >= 400:
            try:
                payload = json.loads(content) if is_json else content.decode("utf-8", "replace")
            except ValueError:
                payload = content.decode("utf-8", "replace")
            raise error_from_body(payload, status)
        return json.loads(content) if is_json else content.decode("utf-8")

    # -- tables ----------------------------------------------------------------------------
    def create_table(self, name: str, schema: Mapping | Schema, *, exist_ok: bool = False,
                     data: Any = None) -> "RemoteTable":
        schema = schema if isinstance(schema, Schema) else Schema(schema)
        d = self._call("POST", "/tables", {"name": name, "schema": schema.to_json(),
                                           "exist_ok": exist_ok})
        t = RemoteTable(self, d)
        if data is not None:
            t.add(data)
        return t

    def open_table(self, name: str) -> "RemoteTable":
        return RemoteTable(self, self._call("GET", f"/tables/{_seg(name)}"))

    def __getitem__(self, name: str) -> "RemoteTable":
        return self.open_table(name)

    def __contains__(self, name: str) -> bool:
        return name in self.table_names()

    def table_names(self) -> list[str]:
        return self._call("GET", "/tables")["tables"]

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        self._call("DELETE", f"/tables/{_seg(name)}",
                   params={"missing_ok": "true" if missing_ok else "false"})

    def sql(self, query: str, params: Any = None) -> pa.Table:
        if isinstance(params, (list, tuple)):       # one value per $n, never one matrix
            params = [wire.to_jsonable(p) for p in params]
        d = self._call("POST", "/sql", {"query": query, "params": wire.to_jsonable(params),
                                        "vectors": self._vectors})
        return wire.decode_table(d)

    # -- operations ------------------------------------------------------------------------
    def health(self) -> dict:
        return self._call("GET", "/health")

    def metrics(self) -> str:
        return self._call("GET", "/metrics")

    def backup(self, dest: str) -> dict:
        """A consistent copy into folder `dest` inside the server's --backup-dir."""
        return self._call("POST", "/admin/backup", {"dest": dest})

    def restore(self, backup: str, target: str) -> dict:
        return self._call("POST", "/admin/restore", {"backup": backup, "target": target})

    # -- life cycle ------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:
            self._http.close()
            self._closed = True

    def __enter__(self) -> "RemoteDatabase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"unidb.RemoteDatabase({self.url!r})"


def _seg(name: Any) -> str:
    """A path segment; quoting keeps '/' and '..' in a name from changing the route."""
    if not isinstance(name, str):
        from unidb.errors import SchemaError
        raise SchemaError(f"table name {name!r} must be a string")
    return quote(name, safe="")


class RemoteTable:
    """One table of a `RemoteDatabase`, with the methods of `unidb.api.table.Table`."""

    def __init__(self, db: RemoteDatabase, desc: dict):
        self._db = db
        self.name = desc["name"]
        self.schema = Schema.from_json(desc["schema"])
        self._pk = self.schema.primary_key
        self._path = f"/tables/{_seg(self.name)}"

    @property
    def primary_key(self) -> str:
        return self._pk

    def _call(self, method: str, suffix: str, body: Any = None,
              params: dict | None = None) -> Any:
        return self._db._call(method, self._path + suffix, body, params)

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"unidb.RemoteTable({self.name!r}, {self._db.url!r}, schema={self.schema!r})"

    # -- writes ----------------------------------------------------------------------------
    def add(self, rows: Any) -> int:
        return self._call("POST", "/add", {"columns": wire.encode_rows(rows)})["added"]

    def upsert(self, rows: Any) -> dict:
        return self._call("POST", "/upsert", {"columns": wire.encode_rows(rows)})

    def delete(self, ids: Any = None, where: Any = None) -> int:
        if ids is None and where is None:
            raise ValidationError("delete() needs ids= or where= (use where='TRUE' to delete "
                                  "every row)")
        return self._call("POST", "/delete", {"ids": wire.to_jsonable(ids, vectors_b64=False),
                                              "where": wire.to_jsonable(where)})["deleted"]

    def update(self, where: Any = None, values: dict | None = None) -> int:
        return self._call("POST", "/update", {"where": wire.to_jsonable(where),
                                              "values": wire.to_jsonable(values)})["updated"]

    # -- reads -----------------------------------------------------------------------------
    def get(self, ids: Any, columns: Sequence[str] | None = None) -> pa.Table:
        d = self._call("POST", "/get", {"ids": wire.to_jsonable(ids, vectors_b64=False),
                                        "columns": _cols(columns), "vectors": self._db._vectors})
        return wire.decode_table(d)

    def count(self, where: Any = None) -> int:
        return self._call("POST", "/count", {"where": wire.to_jsonable(where)})["count"]

    def to_arrow(self, columns: Sequence[str] | None = None, where: Any = None) -> pa.Table:
        d = self._call("POST", "/scan", {"columns": _cols(columns),
                                         "where": wire.to_jsonable(where),
                                         "vectors": self._db._vectors})
        return wire.decode_table(d)

    def to_pandas(self, columns: Sequence[str] | None = None, where: Any = None):
        return self.to_arrow(columns, where).to_pandas()

    def search(self, vector: Any = None, *args: Any, column: str | None = None,
               text: str | None = None, sparse: Any = None, vectors: dict | None = None,
               weights: dict | None = None, text_column: str | None = None,
               sparse_column: str | None = None, **unknown: Any) -> "RemoteSearchBuilder":
        """Start a search (same arguments as `Table.search`); runs on the server."""
        check_search_arguments(args, unknown)
        return RemoteSearchBuilder(self, vector=vector, column=column, text=text, sparse=sparse,
                                   vectors=vectors, weights=weights, text_column=text_column,
                                   sparse_column=sparse_column)

    # -- indexes and maintenance -----------------------------------------------------------
    def create_index(self, column: str, kind: str | None = None, **options: Any) -> None:
        self._call("POST", "/indexes", {"column": column, "kind": kind,
                                        "options": wire.to_jsonable(options)})

    def drop_index(self, column: str) -> None:
        self._call("DELETE", f"/indexes/{_seg(column)}")

    def list_indexes(self) -> dict:
        return self._call("GET", "/indexes")

    def index_stats(self, column: str) -> dict:
        return self._call("GET", f"/indexes/{_seg(column)}/stats")

    def compact(self) -> int:
        return self._call("POST", "/compact")["compacted"]

    def flush(self) -> None:
        self._call("POST", "/flush")

    def stats(self) -> dict:
        return self._call("GET", "/stats")


def _cols(columns: Any) -> Any:
    if columns is None or isinstance(columns, str):
        return columns
    return list(columns)


class RemoteExplain(dict):
    """The server's explain record as a dict (`to_dict()`), printing as the embedded one does."""

    def __init__(self, doc: Any, text: str):
        super().__init__(doc if isinstance(doc, dict) else {"explain": doc})
        self.text = text

    def to_dict(self) -> dict:
        return dict(self)

    def __str__(self) -> str:
        return self.text


class AnswerRows:
    """The rows of a server's search answer, read by position: the `snapshot` of a remote
    `SearchResult`, whose row ids are positions in the answer."""

    def __init__(self, table: pa.Table):
        self._table = table

    def take(self, row_ids: np.ndarray, columns) -> pa.Table:
        return self._table.select(list(columns)).take(pa.array(row_ids, pa.int64()))


class RemoteSearchBuilder(SearchBuilder):
    """`SearchBuilder` whose executor is the server: the request goes as JSON in one POST."""

    def _execute(self, request: SearchRequest, explain: bool) -> SearchResult:
        t = self._table
        params = {"vectors": t._db._vectors}
        if explain:
            params["explain"] = "true"
        d = t._call("POST", "/search", request.to_json(), params=params)
        return _result(d, t.schema)


def _result(d: dict, schema: Schema) -> SearchResult:
    """A server's search answer as a SearchResult over its rows."""
    table = wire.decode_table(d["table"])
    value_col = d["value_column"]
    n = int(d["num_queries"])
    if d["single"]:
        positions = [np.arange(table.num_rows, dtype=np.int64)]
    else:
        which = table.column(QUERY).to_numpy()
        positions = [np.flatnonzero(which == i).astype(np.int64) for i in range(n)]
    values = table.column(value_col).to_numpy(zero_copy_only=False)
    columns = tuple(c for c in table.column_names if c not in (value_col, QUERY))
    explain = tuple(RemoteExplain(e, x) for e, x in zip(d.get("explain", ()), d.get("text", ())))
    return SearchResult(row_ids=tuple(positions), values=tuple(values[p] for p in positions),
                        value_column=value_col, single=bool(d["single"]), explain=explain,
                        snapshot=AnswerRows(table), schema=schema, columns=columns)
