"""docs/openapi.json is the app's OpenAPI document (regenerate: `unidb openapi`)."""
from __future__ import annotations

import json

from unidb.cli import openapi_text
from unidb.server.app import openapi_document

from conftest import REPO

DOC = REPO / "docs" / "openapi.json"


def test_openapi_file_matches_app():
    assert DOC.exists(), "run `unidb openapi` to write docs/openapi.json"
    stored = json.loads(DOC.read_text())
    assert stored == json.loads(json.dumps(openapi_document())), \
        "docs/openapi.json is stale: regenerate it with `python -m unidb.cli openapi`"
    assert DOC.read_text() == openapi_text()


def test_openapi_documents_roles_and_security():
    doc = openapi_document()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            role = op["x-unidb-role"]
            assert role in ("none", "read", "admin"), (path, method)
            assert ("security" in op) == (role != "none"), (path, method)
    assert doc["paths"]["/health"]["get"]["x-unidb-role"] == "none"
    assert doc["paths"]["/tables/{name}/add"]["post"]["x-unidb-role"] == "admin"
    assert doc["paths"]["/tables/{name}/search"]["post"]["x-unidb-role"] == "read"


def test_openapi_documents_every_error_status():
    """Each route lists the errors it can answer, all with the ErrorBody schema; admin routes
    and /sql can refuse a read key (403); reads can time out (504); no FastAPI default 422."""
    doc = openapi_document()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert {"class", "message", "status"} <= set(detail["required"])
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = {int(c) for c in op["responses"]}
            role = op["x-unidb-role"]
            if role == "none":
                assert codes == {200}, (path, method)
                continue
            assert {400, 401, 404, 409, 413, 422, 500} <= codes, (path, method, codes)
            assert (403 in codes) == (role == "admin" or path == "/sql"), (path, method)
            assert (504 in codes) == (role == "read"), (path, method)
            for code, resp in op["responses"].items():
                if int(code) >= 400:
                    assert resp["content"] == {"application/json": {"schema": {
                        "$ref": "#/components/schemas/ErrorBody"}}}, (path, method, code)
                    assert resp["description"], (path, method, code)
