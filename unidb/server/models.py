"""Request bodies of the REST endpoints (they also make the OpenAPI document).

Values stay loosely typed (`Any`) where the embedded API accepts many forms; the embedded
call validates them and its error comes back as the same class.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

VectorEncoding = Literal["list", "b64"]


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
    ids: Any = None
    where: Any = Field(None, description="filter text, or {'expr': Expr.to_json()}")


class UpdateBody(BaseModel):
    where: Any = None
    values: dict[str, Any] | None = None


class GetBody(BaseModel):
    ids: Any = None
    columns: list[str] | str | None = None
    vectors: VectorEncoding = "list"


class CountBody(BaseModel):
    where: Any = None


class ScanBody(BaseModel):
    columns: list[str] | str | None = None
    where: Any = None
    vectors: VectorEncoding = "list"


class SearchBody(BaseModel):
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
    query: str
    params: Any = None
    vectors: VectorEncoding = "list"


class BackupBody(BaseModel):
    dest: str = Field(description="folder name inside the server's backup folder")


class RestoreBody(BaseModel):
    backup: str = Field(description="backup folder name inside the backup folder")
    target: str = Field(description="new folder name inside the backup folder")
