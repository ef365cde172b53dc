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
