"""Schemathesis against a live server: every operation of the OpenAPI document, with an admin
key and a read key, on random valid and invalid requests. Checked: no 5xx, every status is
one the document lists for that route, the body matches the documented schema (errors are
ErrorBody), content types and headers conform, invalid input is refused with a 4xx, and a
request without a key is refused.

Not checked: `positive_data_acceptance` (that every schema-valid request succeeds). The
document types SQL text, filters, vectors and row values as strings / any JSON, as they are,
so schema-valid requests are mostly meaningless ("SELECT x FROM \\x00") and rightly get 422.

Bounded: MAX_EXAMPLES per operation and key (~25 operations x 2 keys), no shrinking
deadline; about a minute on a 2-core machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

import unidb
from unidb.server.app import ServerConfig, openapi_document
from unidb.server.auth import KeyStore
from unidb.server.limits import Limits
from unidb.server.testing import serve_in_thread

MAX_EXAMPLES = 30
TABLE = "t"
DIM = 4
# Small limits so random requests hit them (413) instead of doing large work.
LIMITS = Limits(max_k=100, max_batch_rows=50, max_body_bytes=200_000, max_filter_chars=500,
                query_timeout_s=10.0, max_result_rows=1_000, max_queries=8)

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live server on a database with one table of every column kind, and its two keys."""
    root = tmp_path_factory.mktemp("fuzz")
    path = root / "db.unidb"
    db = unidb.connect(path)
    t = db.create_table(TABLE, {"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
                                "name": unidb.String(), "body": unidb.Text(),
                                "emb": unidb.Vector(DIM)})
    rng = np.random.default_rng(0)
    n = 60
    t.add({"id": np.arange(n), "price": rng.uniform(0, 10, n),
           "name": [f"n{i}" for i in range(n)],
           "body": ["red shoe" if i % 2 else "blue hat" for i in range(n)],
           "emb": rng.standard_normal((n, DIM)).astype(np.float32)})
    db.close()
    keys = KeyStore(path)
    admin, read = keys.create("admin", "fuzz-admin"), keys.create("read", "fuzz-read")
    config = ServerConfig(port=0, access_log=False, limits=LIMITS, backup_dir=root / "backups")
    with serve_in_thread(path, config) as url:
        yield url, {"admin": admin, "read": read}


def _aim(case) -> None:
    """Point most requests at the real table, so they get past the 404 into the route."""
    params = case.path_parameters or {}
    if "name" in params and not (case.method.upper() == "DELETE" and "column" not in params):
        params["name"] = TABLE


def _run(case, url: str, key: str) -> None:
    _aim(case)
    case.call_and_validate(base_url=url, headers={"X-API-Key": key},
                           excluded_checks=[positive_data_acceptance])


FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))


@schema.parametrize()
@FUZZ
def test_fuzz_admin_key(case, server):
    url, keys = server
    _run(case, url, keys["admin"])


@schema.parametrize()
@FUZZ
def test_fuzz_read_key(case, server):
    url, keys = server
    _run(case, url, keys["read"])
