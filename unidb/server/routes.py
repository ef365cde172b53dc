"""The REST endpoints: tables, rows, search, indexes, SQL, and operations.

Each endpoint is a thin shell over the embedded `Database`/`Table` and the search executor:
decode the JSON body (b64 vectors, filter trees; a search body is a `SearchRequest`), check the
request limits, run the call in a worker thread, encode the result. Reads run under the query
timeout; writes are never cut short, so a write the server acknowledged is a write the
database committed.

Every route names the role it needs in its OpenAPI `x-unidb-role` ("none", "read" or
"admin"); the `Gate` middleware (app.py) enforces it before the body is read.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import anyio
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from unidb.errors import LimitError, QueryError, UnidbError, ValidationError
from unidb.protocol import wire
from unidb.query.request import SearchRequest
from unidb.server.models import (BackupBody, CountBody, CreateTableBody, DeleteBody,
                                 GetBody, IndexBody, RestoreBody, RowsBody, ScanBody, SqlBody,
                                 UpdateBody, VectorEncoding, error_responses,
                                 search_request_schema)
from unidb.server.sqlguard import sql_is_read_only

NONE, READ, ADMIN = "none", "read", "admin"


def role(r: str, forbidden: bool = False, body: dict | None = None) -> dict:
    """Route options: the role it needs, the error answers it documents, and the JSON schema
    of a body the route reads itself (`body`)."""
    extra: dict[str, Any] = {"x-unidb-role": r}
    if body is not None:
        extra["requestBody"] = {"required": True,
                                "content": {"application/json": {"schema": body}}}
    return {"openapi_extra": extra, "responses": error_responses(r, forbidden)}


# -- responses ---------------------------------------------------------------------------------
def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _finite(o: Any) -> Any:
    if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


class JSON(Response):
    """JSON that also carries numpy values; NaN/inf (not JSON) become null."""
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, separators=(",", ":"), default=_default, allow_nan=False)
        except ValueError:
            text = json.dumps(_finite(json.loads(json.dumps(content, default=_default))),
                              separators=(",", ":"))
        return text.encode()


# -- request bodies ----------------------------------------------------------------------------
class WireRequest(Request):
    """A request whose JSON body is parsed by `wire.loads` (UTF-8, no lone surrogates, bounded
    nesting), so malformed text is refused before any model or route sees it."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = wire.loads(await self.body())
            except ValidationError as e:
                # FastAPI answers 400 for any other error raised while reading the body.
                raise HTTPException(422, str(e)) from None
        return self._json


class WireRoute(APIRoute):
    """Every route reads its body through `WireRequest`."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(WireRequest(request.scope, request.receive))
        return strict


# -- threads and limits ------------------------------------------------------------------------
async def read_call(request: Request, fn, *args):
    """Run a read in a worker thread under the query timeout (HTTP 504 past it)."""
    timeout = request.app.state.config.limits.query_timeout_s
    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
    except TimeoutError:
        err = LimitError(f"query exceeded the server's query_timeout_s of {timeout} s; narrow "
                         f"it (filter, limit, index) or raise --query-timeout")
        err.http_status = 504
        raise err from None


async def write_call(fn, *args):
    """Run a write in a worker thread to completion (a write is never abandoned)."""
    return await anyio.to_thread.run_sync(fn, *args)


def _db(request: Request):
    return request.app.state.db


def _limits(request: Request):
    return request.app.state.config.limits


def _filter(request: Request, where: Any) -> Any:
    """A `where` from JSON (text or {"expr": tree}), checked against max_filter_chars."""
    if where is None:
        return None
    text = where if isinstance(where, str) else json.dumps(where)
    _limits(request).check_filter(text)
    return wire.from_jsonable(where)


def _columns(columns: Any) -> Any:
    """Selected columns, each named once (a repeat is a mistake, and Arrow cannot hold it)."""
    names = [columns] if isinstance(columns, str) else columns
    if isinstance(names, list):
        seen: set = set()
        for c in names:
            if not isinstance(c, str):
                raise QueryError(f"column names are strings, got {c!r}")
            if c in seen:
                raise QueryError(f"column {c!r} is selected more than once; name each column "
                                 f"once")
            seen.add(c)
    return columns


def _table_json(table, vectors: str) -> dict:
    """A result as JSON columns, which are keyed by name: each name must be unique."""
    names = table.column_names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise QueryError(f"the result has more than one column named {dup}; give each a "
                         f"distinct alias (SELECT a.id AS a_id, b.id AS b_id ...)")
    return wire.encode_table(table, vectors_b64=vectors == "b64")


# -- routes ------------------------------------------------------------------------------------
router = APIRouter(route_class=WireRoute)


@router.get("/health", **role(NONE))
async def health() -> dict:
    """Liveness: 200 while the server runs (no key needed)."""
    import unidb
    return {"status": "ok", "version": unidb.__version__}


@router.get("/metrics", response_class=PlainTextResponse, **role(READ))
async def metrics(request: Request):
    """Prometheus text: requests, latency histograms, rows per table, index stats."""
    text = await read_call(request, request.app.state.metrics.render, _db(request))
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@router.get("/tables", **role(READ))
async def list_tables(request: Request):
    return JSON({"tables": await read_call(request, _db(request).table_names)})


@router.post("/tables", status_code=201, **role(ADMIN))
async def create_table(request: Request, body: CreateTableBody):
    from unidb.schema import Schema

    def run():
        try:
            schema = Schema.from_json(body.schema_)
        except (KeyError, TypeError, ValueError) as e:
            from unidb.errors import SchemaError
            raise SchemaError(f"bad schema JSON ({e}); expected Schema.to_json() form: "
                              f"{{'columns': [{{'name': ..., 'type': ...}}, ...]}}") from None
        t = _db(request).create_table(body.name, schema, exist_ok=body.exist_ok)
        return _describe(t)
    return JSON(await write_call(run), status_code=201)


def _describe(t) -> dict:
    return {"name": t.name, "schema": t.schema.to_json(), "primary_key": t.primary_key,
            "rows": len(t)}


@router.get("/tables/{name}", **role(READ))
async def describe_table(request: Request, name: str):
    return JSON(await read_call(request, lambda: _describe(_db(request).open_table(name))))


@router.delete("/tables/{name}", **role(ADMIN))
async def drop_table(request: Request, name: str, missing_ok: bool = False):
    await write_call(lambda: _db(request).drop_table(name, missing_ok=missing_ok))
    return JSON({"dropped": name})


def _rows(request: Request, body: RowsBody) -> Any:
    if (body.columns is None) == (body.rows is None):
        raise ValidationError("send exactly one of 'columns' ({name: values}) or 'rows' "
                              "([{...}, ...])")
    if body.rows is not None:
        _limits(request).check_batch(len(body.rows))
        return [{k: wire.from_jsonable(v) for k, v in r.items()} for r in body.rows]
    _limits(request).check_batch(wire.count_rows(body.columns))
    return wire.decode_rows(body.columns)


@router.post("/tables/{name}/add", **role(ADMIN))
async def add_rows(request: Request, name: str, body: RowsBody):
    rows = _rows(request, body)
    n = await write_call(lambda: _db(request).open_table(name).add(rows))
    request.app.state.metrics.rows_written(name, "add", n)
    return JSON({"added": n})


@router.post("/tables/{name}/upsert", **role(ADMIN))
async def upsert_rows(request: Request, name: str, body: RowsBody):
    rows = _rows(request, body)
    out = await write_call(lambda: _db(request).open_table(name).upsert(rows))
    request.app.state.metrics.rows_written(name, "upsert", out["inserted"] + out["updated"])
    return JSON(out)


@router.post("/tables/{name}/delete", **role(ADMIN))
async def delete_rows(request: Request, name: str, body: DeleteBody):
    where = _filter(request, body.where)
    n = await write_call(lambda: _db(request).open_table(name).delete(ids=body.ids, where=where))
    request.app.state.metrics.rows_written(name, "delete", n)
    return JSON({"deleted": n})


@router.post("/tables/{name}/update", **role(ADMIN))
async def update_rows(request: Request, name: str, body: UpdateBody):
    where = _filter(request, body.where)
    values = wire.from_jsonable(body.values) if body.values is not None else None
    n = await write_call(lambda: _db(request).open_table(name).update(where=where,
                                                                      values=values))
    request.app.state.metrics.rows_written(name, "update", n)
    return JSON({"updated": n})


@router.post("/tables/{name}/get", **role(READ))
async def get_rows(request: Request, name: str, body: GetBody):
    def run():
        return _db(request).open_table(name).get(body.ids, columns=_columns(body.columns))
    return JSON(_table_json(await read_call(request, run), body.vectors))


@router.post("/tables/{name}/count", **role(READ))
async def count_rows(request: Request, name: str, body: CountBody):
    where = _filter(request, body.where)
    n = await read_call(request, lambda: _db(request).open_table(name).count(where=where))
    return JSON({"count": n})


@router.post("/tables/{name}/scan", **role(READ))
async def scan_rows(request: Request, name: str, body: ScanBody):
    """Table.to_arrow(columns, where) as JSON columns."""
    where = _filter(request, body.where)

    def run():
        t = _db(request).open_table(name)
        if where is None:
            _limits(request).check_result(len(t))
        out = t.to_arrow(columns=_columns(body.columns), where=where)
        _limits(request).check_result(out.num_rows)
        return out
    return JSON(_table_json(await read_call(request, run), body.vectors))


@router.post("/tables/{name}/search", **role(READ, body=search_request_schema()))
async def search(request: Request, name: str, vectors: VectorEncoding = "list",
                 explain: bool = False):
    """Run a search: the body is a `SearchRequest` as JSON (`SearchRequest.to_json()`). The
    answer holds the rows (and, with ?explain=true, the explain record of each query)."""
    body = await _json_body(request)
    limits = _limits(request)
    if isinstance(body, dict) and body.get("where") is not None:
        where = body["where"]
        limits.check_filter(where if isinstance(where, str) else json.dumps(where))
    req = SearchRequest.from_json(body)
    limits.check_queries(req.num_queries)
    if req.limit is not None:
        limits.check_k(req.limit)

    def run():
        result = _db(request).open_table(name).execute(req)
        out = result.to_arrow()
        limits.check_result(out.num_rows)
        doc = {"single": result.single, "num_queries": len(result.row_ids),
               "value_column": result.value_column, "table": _table_json(out, vectors)}
        if explain:
            doc["explain"] = [_explain_doc(e) for e in result.explain]
            doc["text"] = [str(e) for e in result.explain]
        return doc
    return JSON(await read_call(request, run))


async def _json_body(request: Request) -> Any:
    """The body of a route that reads its own JSON (a ValidationError if it is not JSON)."""
    try:
        return await request.json()
    except ValueError:
        raise ValidationError("the request body is not JSON; send a JSON object with "
                              "Content-Type: application/json") from None


def _explain_doc(ex: Any) -> Any:
    return ex.to_dict() if hasattr(ex, "to_dict") else ex


@router.post("/tables/{name}/indexes", **role(ADMIN))
async def create_index(request: Request, name: str, body: IndexBody):
    options = wire.from_jsonable(body.options)
    await write_call(lambda: _db(request).open_table(name).create_index(body.column, body.kind,
                                                                        **options))
    return JSON({"created": body.column})


@router.get("/tables/{name}/indexes", **role(READ))
async def list_indexes(request: Request, name: str):
    return JSON(await read_call(request, lambda: _db(request).open_table(name).list_indexes()))


@router.delete("/tables/{name}/indexes/{column}", **role(ADMIN))
async def drop_index(request: Request, name: str, column: str):
    await write_call(lambda: _db(request).open_table(name).drop_index(column))
    return JSON({"dropped": column})


@router.get("/tables/{name}/indexes/{column}/stats", **role(READ))
async def index_stats(request: Request, name: str, column: str):
    return JSON(await read_call(request,
                                lambda: _db(request).open_table(name).index_stats(column)))


@router.get("/tables/{name}/stats", **role(READ))
async def table_stats(request: Request, name: str):
    return JSON(await read_call(request, lambda: _db(request).open_table(name).stats()))


@router.post("/tables/{name}/flush", **role(ADMIN))
async def flush(request: Request, name: str):
    await write_call(lambda: _db(request).open_table(name).flush())
    return JSON({"flushed": name})


@router.post("/tables/{name}/compact", **role(ADMIN))
async def compact(request: Request, name: str):
    n = await write_call(lambda: _db(request).open_table(name).compact())
    return JSON({"compacted": n})


@router.post("/sql", **role(READ, forbidden=True))
async def sql(request: Request, body: SqlBody):
    """db.sql(query, params) when this build has SQL; a pyarrow table as JSON columns.
    A read key may run queries only; statements that change data need an admin key."""
    reads = sql_is_read_only(body.query)
    key = request.scope.get("state", {}).get("key")
    if key is not None and key.role != ADMIN and not reads:
        from unidb.errors import AuthError
        err = AuthError(f"API key {key.id} has role {key.role!r}: it may run SELECT queries "
                        f"only; this statement changes data or is not understood as a query")
        err.http_status = 403
        raise err
    params = wire.from_jsonable(body.params)

    def run():
        out = _db(request).sql(body.query, params)
        _limits(request).check_result(out.num_rows)
        return out
    # A statement that may write runs to completion, like every write (no query timeout).
    out = await (read_call(request, run) if reads else write_call(run))
    return JSON(_table_json(out, body.vectors))


@router.post("/admin/backup", **role(ADMIN))
async def backup(request: Request, body: BackupBody):
    """A consistent copy of every table into a new folder inside --backup-dir."""
    from unidb.storage import backup as bk
    dest = bk.confine(_backup_dir(request), body.dest)
    return JSON(await write_call(lambda: _db(request).backup(dest)))


@router.post("/admin/restore", **role(ADMIN))
async def restore(request: Request, body: RestoreBody):
    """Copy a backup into a new folder inside --backup-dir (open it with `unidb serve`)."""
    from unidb.storage import backup as bk
    root = _backup_dir(request)
    src, dst = bk.confine(root, body.backup), bk.confine(root, body.target)
    return JSON(await write_call(lambda: bk.restore(src, dst)))


def _backup_dir(request: Request):
    d = request.app.state.config.backup_dir
    if d is None:
        raise UnidbError("backups over HTTP are disabled: start the server with --backup-dir DIR")
    return d
