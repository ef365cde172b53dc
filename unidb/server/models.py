"""Request bodies of the REST endpoints (they also make the OpenAPI document), the error body,
and the checks of builder-step options that belong to the HTTP boundary.

Values stay loosely typed (`Any`) where the embedded API accepts many forms; the embedded
call validates them and its error comes back as the same class. What only a wire request can
get wrong (a primary key that is not a key, a knob that is not a number) is typed here.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr,
                      ValidationError as PydanticError)

from typing_extensions import TypedDict

from unidb import errors as E
from unidb.errors import QueryError

VectorEncoding = Literal["list", "b64"]


class FilterTree(TypedDict):
    """A filter as a tree: `{"expr": Expr.to_json()}`."""
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    expr: dict[str, Any]


# A filter is text ("price < 10") or a tree; the server parses and checks either.
Filter = Union[str, FilterTree, None]
# Primary keys are Int64 or String columns: one key or a list of keys.
Key = Union[StrictInt, StrictStr]
Ids = Union[Key, list[Key], None]
# Probing more partitions than this is never useful (indexes cap partitions far below it) and
# sizes per-query buffers: 10^12 was a MemoryError, not an answer.
MAX_NPROBE = 1 << 20


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v}")
    return v


Finite = Annotated[float, AfterValidator(_finite)]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_: Literal[tuple(E.__all__)] = Field(  # type: ignore[valid-type]
        alias="class", description="the unidb.errors class the client raises")
    message: str
    status: int
    position: int | None = Field(None, description="QueryError: 0-based offset of the fault")
    line: int | None = None
    column: int | None = None
    pid: int | None = Field(None, description="LockedError: the process holding the lock")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: the error class, its message, the status (and where known the
    position of a query fault)."""
    error: ErrorDetail


# What each error status means (unidb/protocol/errors.py maps the classes); the OpenAPI document
# lists, per route, the ones that route can answer.
ERROR_STATUSES: dict[int, str] = {
    400: "UnidbError: a request the server cannot serve as sent (e.g. backups are disabled, "
         "or the body could not be read)",
    401: "AuthError: no API key, an unknown or revoked key, or a wrong secret",
    403: "AuthError: the key's role may not do this (a read key on a write, or SQL that is "
         "not a query)",
    404: "NotFoundError: the table, column or index does not exist",
    409: "SchemaError (table exists, schema conflict), LockedError or ReadOnlyError",
    413: "LimitError: over a request limit (body, rows, k, filter, result rows, queries)",
    422: "ValidationError (bad rows, bad body) or QueryError (bad filter, search or SQL)",
    500: "CorruptionError or a server fault (see the server log); never a client's mistake",
    503: "StorageError: the server's disk failed the write (full, I/O error); nothing was "
         "applied, retry once the operator has made room",
    504: "LimitError: the read exceeded the server's query timeout",
}


def error_responses(role: str, forbidden: bool) -> dict[int, dict]:
    """The error answers of a route needing `role` ("none", "read", "admin"); `forbidden`:
    a read key may be refused (403) for what it asks."""
    if role == "none":
        return {}
    codes = [400, 401, 404, 409, 413, 422, 500, 503]
    if role == "admin" or forbidden:
        codes.append(403)
    if role == "read":
        codes.append(504)                   # reads run under the query timeout
    return {c: {"model": ErrorBody, "description": ERROR_STATUSES[c]} for c in sorted(codes)}


class SearchKnobs(BaseModel):
    """`.params(...)` knobs the wire checks: index knobs are positive integers."""
    model_config = ConfigDict(extra="allow")
    nprobe: int | None = Field(None, ge=1, le=MAX_NPROBE)
    max_partitions: int | None = Field(None, ge=1, le=MAX_NPROBE)
    eps2: Finite | None = Field(None, ge=0)


class FuseOptions(BaseModel):
    """`.fuse(method, ...)` options: rrf's k is positive; linear weights are numbers."""
    model_config = ConfigDict(extra="allow")
    k: Finite | None = Field(None, gt=0)
    weights: dict[str, Finite] | list[Finite] | None = None
    normalize: str | None = None


STEP_OPTIONS: dict[str, type[BaseModel]] = {"params": SearchKnobs, "fuse": FuseOptions}


def check_step_options(method: str, bound: dict[str, Any]) -> None:
    """QueryError when a builder step's options are not of the form the wire allows."""
    model = STEP_OPTIONS.get(method)
    if model is None:
        return
    try:
        model.model_validate({k: v for k, v in bound.items() if k in model.model_fields})
    except PydanticError as e:
        first = e.errors()[0]
        where = first["loc"][0] if first["loc"] else "options"
        raise QueryError(f"search step {method!r}: {where} {first['msg'].lower()}, got "
                         f"{first.get('input')!r}") from None


class CreateTableBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str
    schema_: dict[str, Any] = Field(alias="schema", description="Schema.to_json() form")
    exist_ok: bool = False


class RowsBody(BaseModel):
    columns: dict[str, Any] | None = Field(None, description="{column: values}; vectors as "
                                           "lists or {'b64', 'shape'} float32 matrices")
    rows: list[dict[str, Any]] | None = Field(None, description="a list of row objects")


class DeleteBody(BaseModel):
    ids: Ids = Field(None, description="a primary key or a list of them")
    where: Filter = Field(None, description="filter text, or {'expr': Expr.to_json()}")


class UpdateBody(BaseModel):
    where: Filter = None
    values: dict[str, Any] | None = None


class GetBody(BaseModel):
    ids: Ids = Field(None, description="a primary key or a list of them")
    columns: list[str] | str | None = None
    vectors: VectorEncoding = "list"


class CountBody(BaseModel):
    where: Filter = None


class ScanBody(BaseModel):
    columns: list[str] | str | None = None
    where: Filter = None
    vectors: VectorEncoding = "list"


class SearchBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"search": {"vector": [0.1, 0.2, 0.3, 0.4]},
         "steps": [["where", ["price < 9"], {}], ["limit", [5], {}]]},
        {"search": {"vector": [0.1, 0.2, 0.3, 0.4], "text": "red shoe"},
         "steps": [["fuse", ["rrf"], {"k": 60}], ["select", [["id", "price"]], {}]]}]})
    search: dict[str, Any] = Field(default_factory=dict, description=(
        "Table.search() keyword arguments: vector, column, text, sparse, vectors, weights"))
    steps: list[list[Any]] = Field(default_factory=list, description=(
        "builder calls in order, each [method, args, kwargs], e.g. ['where', ['price < 9'], {}]"
        ", ['limit', [10], {}], ['fuse', ['rrf'], {}]"))
    explain: bool = Field(False, description="return .explain() instead of rows")
    explain_run: bool = True
    vectors: VectorEncoding = "list"


class IndexBody(BaseModel):
    column: str
    kind: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class SqlBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"query": "SELECT id, price FROM t WHERE price < $1 ORDER BY price LIMIT 5",
         "params": [9]}]})
    query: str
    params: Any = None
    vectors: VectorEncoding = "list"


# Longest folder name file systems take (NAME_MAX, in bytes); past it the OS refuses the path.
MAX_NAME_BYTES = 255


def _folder_name(v: str) -> str:
    if len(v.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"a folder name is at most {MAX_NAME_BYTES} bytes of UTF-8")
    return v


FolderName = Annotated[str, AfterValidator(_folder_name)]


class BackupBody(BaseModel):
    dest: FolderName = Field(description="folder name inside the server's backup folder")


class RestoreBody(BaseModel):
    backup: FolderName = Field(description="backup folder name inside the backup folder")
    target: FolderName = Field(description="new folder name inside the backup folder")
