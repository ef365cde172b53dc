"""Request bodies of the REST endpoints (they also make the OpenAPI document) and the error
body.

Values stay loosely typed (`Any`) where the embedded API accepts many forms; the embedded
call validates them and its error comes back as the same class. What only a wire request can
get wrong (a primary key that is not a key) is typed here. The search body is a
`SearchRequest` in its JSON form, documented (not parsed) by `SearchRequestBody`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from typing_extensions import NotRequired, TypedDict

from unidb import errors as E
from unidb.query.knobs import (FORCE_PLANS, FUSE_METHODS, MAX_NPROBE, MAX_WINDOW_ROWS,
                               NORMALIZE, STOP_STATS)
from unidb.query.multivector import SCHEDULES
from unidb.query.request import DEFAULT_LIMIT, MAX_LIMIT

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


# -- the search request (unidb/query/request.py) -----------------------------------------------
# These models document `SearchRequest.to_json()` for the OpenAPI document; the route reads the
# body with `SearchRequest.from_json`, which refuses everything they refuse (and more: names
# and dimensions the table's schema decides), with the error classes of the embedded API.
class B64Vector(TypedDict):
    """A float32 vector or matrix: little-endian bytes, base64, and its shape."""
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    b64: str
    shape: NotRequired[list[Annotated[StrictInt, Field(ge=0)]] | None]


# One query vector, a batch of them (one result list per vector), or either as base64.
QueryVector = Union[list[float], list[list[float]], B64Vector]
Weight = Annotated[float, Field(ge=0)]


class SparseQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    indices: list[StrictInt] = Field(description="term ids, 0..2^31-1, each once")
    values: list[float] = Field(description="their weights")


class DistanceRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float | None = None
    max: float | None = None


class Fuse(BaseModel):
    """How a hybrid search combines its sources (`.fuse(method, ...)`)."""
    model_config = ConfigDict(extra="forbid")
    method: Literal[FUSE_METHODS] = "rrf"  # type: ignore[valid-type]
    k: Weight | None = Field(None, description="rrf: rank offset (60 by default)")
    weights: dict[str, Weight] | list[Weight] | None = Field(
        None, description="linear: one weight per source, by kind ('vector', 'text', "
                          "'sparse'), by 'kind:column', or as a list in that order")
    normalize: Literal[NORMALIZE] | None = None  # type: ignore[valid-type]


Probe = Annotated[StrictInt, Field(ge=1, le=MAX_NPROBE)]
Rows = Annotated[StrictInt, Field(ge=1, le=MAX_WINDOW_ROWS)]
Limit = Annotated[StrictInt, Field(ge=1, le=MAX_LIMIT)]


class ScanKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_partitions: Probe | None = None
    eps2: Weight | None = None
    max_partitions: Probe | None = None


class Knobs(BaseModel):
    """`.params(...)`: per-query knobs of the access path (null = the default)."""
    model_config = ConfigDict(extra="forbid")
    nprobe: Probe | None = None
    max_partitions: Probe | None = None
    eps2: Weight | None = None
    E: Rows | None = None
    w: Rows | Literal["growing"] | None = None
    budget: Annotated[StrictInt, Field(ge=0)] | None = None
    force_plan: Literal[FORCE_PLANS] | None = None  # type: ignore[valid-type]
    scan_knobs: ScanKnobs | None = None
    stop_stat: Literal[STOP_STATS] | None = None  # type: ignore[valid-type]
    schedule: Literal[SCHEDULES] | None = None  # type: ignore[valid-type]
    batch_size: Rows | None = None
    exact: StrictBool | None = None


class SearchRequestBody(BaseModel):
    """A search: `SearchRequest.to_json()`. Give vector, text, sparse or vectors; with a vector
    and text/sparse the search is hybrid."""
    model_config = ConfigDict(extra="forbid", title="SearchRequest", json_schema_extra={
        "examples": [
            {"vector": [0.1, 0.2, 0.3, 0.4], "where": "price < 9", "limit": 5},
            {"vector": [0.1, 0.2, 0.3, 0.4], "text": "red shoe", "fuse": {"method": "rrf",
             "k": 60}, "select": ["id", "price"]},
            {"vector": {"b64": "zczMPc3MTD6amZk+zczMPg==", "shape": [4]},
             "distance_range": {"max": 0.5}, "params": {"nprobe": 16}}]})
    vector: QueryVector | None = Field(None, description="kNN / range query: one vector, or a "
                                                          "batch (one result list per vector)")
    column: StrictStr | None = Field(None, description="the vector column (inferred when the "
                                                       "table has one)")
    text: StrictStr | None = Field(None, description="BM25 query text")
    text_column: StrictStr | None = None
    sparse: SparseQuery | None = None
    sparse_column: StrictStr | None = None
    vectors: dict[str, QueryVector] | None = Field(
        None, description="multi-vector: {column: one query vector}")
    weights: dict[str, Weight] | None = Field(None, description="multi-vector: {column: weight}")
    where: Filter = Field(None, description="filter text, or {'expr': Expr.to_json()}")
    limit: Limit | None = Field(
        None, description=f"rows per query ({DEFAULT_LIMIT} unless set; a distance range "
                          f"returns every row in range unless set)")
    distance_range: DistanceRange | None = None
    select: list[StrictStr] | StrictStr | None = Field(
        None, description="result columns (the primary key is always returned)")
    fuse: Fuse | None = None
    params: Knobs | None = None


def search_request_schema() -> dict[str, Any]:
    """The JSON schema of a search request body, self-contained (no $refs), for the route's
    OpenAPI `requestBody`."""
    schema = SearchRequestBody.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(v: Any) -> Any:
        if isinstance(v, dict):
            ref = v.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline({**defs[ref.rsplit("/", 1)[1]],
                               **{k: x for k, x in v.items() if k != "$ref"}})
            return {k: inline(x) for k, x in v.items()}
        if isinstance(v, list):
            return [inline(x) for x in v]
        return v
    return inline(schema)


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
