"""The remote search builder is the embedded SearchBuilder with another executor: a method added
to SearchBuilder later works remotely with no client or server change (every method makes a
SearchRequest, and the request is what travels); a request body holds request fields only."""
from __future__ import annotations

import numpy as np
import pytest

import unidb
from unidb.api.search import SearchBuilder
from unidb.server.app import ServerConfig
from unidb.server.auth import KeyStore
from unidb.server.testing import serve_in_thread

from conftest import items_rows, items_schema


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt") / "db.unidb"
    db = unidb.connect(path)
    db.create_table("t", items_schema(4)).add(items_rows(30, 4))
    db.close()
    key = KeyStore(path).create("admin")
    with serve_in_thread(path, ServerConfig(port=0, access_log=False)) as url:
        d = unidb.connect(url, api_key=key)
        yield d.open_table("t"), url, key
        d.close()


def test_new_builder_method_passes_through(remote, monkeypatch):
    t, _, _ = remote

    def under(self, price: float, k: int = 3) -> SearchBuilder:   # a step someone adds later
        if price <= 0:
            raise unidb.QueryError(f"under() needs a positive price, got {price}")
        return self.where(unidb.col("price") < price).limit(k)
    monkeypatch.setattr(SearchBuilder, "under", under, raising=False)
    hits = t.search(np.zeros(4)).under(100.0, k=30).to_list()
    rows = items_rows(30, 4)
    assert sorted(h["id"] for h in hits) == sorted(rows["id"][rows["price"] < 100].tolist())
    with pytest.raises(unidb.QueryError):
        t.search(np.zeros(4)).under(0)                   # validated locally, at the call


@pytest.mark.parametrize("field", ["_run", "__init__", "to_arrow", "explain", "nope", "__class__",
                                   "steps", "search"])
def test_only_request_fields(remote, field):
    _, url, key = remote
    import json
    import urllib.request
    body = json.dumps({"vector": [0, 0, 0, 0], field: [[], {}]}).encode()
    req = urllib.request.Request(f"{url}/tables/t/search", data=body, method="POST",
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 422
    err = json.loads(e.value.read())["error"]
    assert err["class"] == "QueryError" and field in err["message"]
    with pytest.raises(AttributeError):
        getattr(remote[0].search(np.zeros(4)), "_run_remote_secret")


def test_explain_without_running(remote):
    t, _, _ = remote
    ex = t.search(np.zeros(4)).limit(5).explain(run=False)
    assert str(ex)
