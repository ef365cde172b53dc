"""One request, one engine (issue #12): a search is a `SearchRequest` value, its filter is
evaluated once per search into a `RowFilter`, the request survives JSON exactly, and the same
request gives the same answer embedded and over HTTP."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

import unidb
from unidb.api.search import SearchBuilder
from unidb.client import RemoteDatabase, RemoteSearchBuilder
from unidb.errors import UnidbError
from unidb.index.rowfilter import RowFilter
from unidb.query.filter_tree import Expr, and_, col, match
from unidb.query.request import MAX_LIMIT, SearchRequest, check_k
from unidb.server.app import ServerConfig, create_app
from unidb.server.auth import KeyStore
from unidb.server.models import SearchRequestBody

DIM = 4
N = 300
WORDS = ["red", "blue", "shoe", "hat", "kettle", "lamp"]


def _rows(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "id": np.arange(n),
        "price": np.round(rng.uniform(0, 100, n), 2),
        "cat": rng.choice(["a", "b", "c"], n).tolist(),
        "body": [" ".join(rng.choice(WORDS, 3)) for _ in range(n)],
        "sv": [{int(i): float(rng.uniform(0.1, 2)) for i in rng.choice(20, 3, replace=False)}
               for _ in range(n)],
        "v": rng.standard_normal((n, DIM)).astype(np.float32),
        "w": rng.standard_normal((n, DIM)).astype(np.float32),
    }


SCHEMA = {"id": unidb.Int64(primary_key=True), "price": unidb.Float64(),
          "cat": unidb.String(), "body": unidb.Text(), "sv": unidb.SparseVector(),
          "v": unidb.Vector(DIM), "w": unidb.Vector(DIM, metric="cosine")}


def _table(db, name: str = "t"):
    """Two parts (rows added in two commits, the first checkpointed), a partition index on
    `v`, none on `w` (flat scans)."""
    t = db.create_table(name, SCHEMA)
    rows = _rows(N)
    half = {k: v[:N // 2] for k, v in rows.items()}
    rest = {k: v[N // 2:] for k, v in rows.items()}
    t.add(half)
    t.flush()
    t.add(rest)
    t.create_index("v", kind="partition", target_posting=32)
    return t


# -- the filter is evaluated once per search --------------------------------------------------
@pytest.fixture
def evaluations(monkeypatch):
    """Counts, per table part, the evaluations of any filter on that part's rows: every
    evaluation of a filter on table data goes through Expr.evaluate."""
    seen: Counter = Counter()
    real = Expr.evaluate

    def counted(self, data, context=None):
        seen[id(data)] += 1
        return real(self, data, context)
    monkeypatch.setattr(Expr, "evaluate", counted)
    return seen


def _parts(t) -> int:
    return sum(1 for p in t._state().parts if p.num_rows)


SEARCHES = {
    "flat (no index)": lambda t, q: t.search(q, column="w").where("price < 50").limit(5),
    "flat range": lambda t, q: t.search(q, column="w").where("price < 50")
    .distance_range(max=1.0),
    "partition index, planner": lambda t, q: t.search(q, column="v").where("price < 50")
    .limit(5),
    "partition index, forced stream": lambda t, q: t.search(q, column="v")
    .where("price < 50").params(force_plan="index").limit(5),
    "partition index, three queries": lambda t, q: t.search(np.stack([q, -q, 2 * q]),
                                                            column="v").where("price < 50")
    .limit(5),
    "partition index, range": lambda t, q: t.search(q, column="v").where("price < 50")
    .distance_range(max=2.0),
    "text": lambda t, q: t.search(text="red shoe").where("price < 50").limit(5),
    "sparse": lambda t, q: t.search(sparse={1: 1.0, 2: 0.5}).where("price < 50").limit(5),
    "vector + text hybrid": lambda t, q: t.search(q, column="v", text="red shoe")
    .where("price < 50").limit(5),
    "vector + text + sparse hybrid": lambda t, q: t.search(q, column="w", text="red",
                                                           sparse={3: 1.0})
    .where("price < 50").limit(5),
    "multi-vector": lambda t, q: t.search(vectors={"v": q, "w": q}).where("price < 50").limit(5),
}


@pytest.mark.parametrize("kind", list(SEARCHES))
def test_filter_is_evaluated_once_per_search(db, evaluations, kind):
    t = _table(db)
    assert _parts(t) == 2
    q = np.random.default_rng(1).standard_normal(DIM)
    want = t.count(where="price < 50")
    evaluations.clear()
    result = SEARCHES[kind](t, q).run()
    # each part's rows were evaluated exactly once, whatever the access path
    assert len(evaluations) == 2 and set(evaluations.values()) == {1}, dict(evaluations)
    for ex in result.explain:                 # explain's count is that evaluation's count
        assert ex.rows_matched == want
    for ids in result.row_ids:
        assert (result.snapshot.take(ids, ["price"]).column(0).to_numpy() < 50).all()


def test_explain_of_a_filtered_search_does_not_evaluate_again(db, evaluations):
    t = _table(db)
    b = t.search(np.ones(DIM), column="w").where("cat = 'a'").limit(3)
    evaluations.clear()
    ex = b.explain()
    assert sum(evaluations.values()) == 2 and ex.rows_matched == t.count(where="cat = 'a'")


def test_sql_explain_runs_the_search_once(db, evaluations):
    t = _table(db)
    evaluations.clear()
    plan = db.sql("EXPLAIN SELECT id FROM t WHERE price < 50 ORDER BY "
                  "l2_distance(v, [0.1, 0.2, 0.3, 0.4]) LIMIT 3").to_pylist()
    assert sum(evaluations.values()) == _parts(t)
    assert "rows_matched=" in plan[0]["detail"]


def test_row_filter_answers_each_access_path():
    rows = RowFilter.from_rows(np.array([7, 2, 5]), 10)
    assert rows.count == 3 and rows.row_ids().tolist() == [2, 5, 7]
    assert rows.allows(np.array([2, 3, 7, 10, 99, -1])).tolist() == \
        [True, False, True, False, False, False]           # ids past the snapshot: never
    assert RowFilter(np.array([True, False, True])).count == 2
    with pytest.raises(ValueError):
        RowFilter.from_rows(np.array([10]), 10)


# -- one k rule -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, MAX_LIMIT + 1, 2.0, True, "5", None, float("nan")])
def test_one_k_rule(db, bad):
    t = _table(db)
    with pytest.raises(unidb.QueryError, match="limit"):
        check_k(bad)
    with pytest.raises(unidb.QueryError, match="limit"):
        t.search(np.ones(DIM), column="v").limit(bad)
    if bad is not None:
        with pytest.raises(unidb.QueryError, match="limit"):
            SearchRequest.from_json({"vector": [1.0] * DIM, "limit": bad})
    assert check_k(np.int64(MAX_LIMIT)) == MAX_LIMIT


def test_builder_holds_a_request(db):
    t = _table(db)
    b = t.search(np.ones(DIM), column="v").where("price < 5").limit(3).select(["price"])
    r = b.request()
    assert isinstance(r, SearchRequest) and r.limit == 3 and r.select == ("price",)
    assert r.where.to_sql() == "price < 5"
    with pytest.raises(Exception):
        r.limit = 4                                          # immutable
    with pytest.raises(ValueError):
        r.vector[0] = 1.0                                    # its arrays too
    again = SearchBuilder.from_request(t, r).to_arrow()
    assert again.equals(b.to_arrow())


# -- JSON round trip ------------------------------------------------------------------------------
NAMES = st.sampled_from(["v", "w", "price", "cat", "body", "sv", "nope"])
FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
LITERALS = st.one_of(st.integers(-2**62, 2**62), FINITE, st.text(max_size=8), st.booleans())


def _vectors(dim: int = DIM, batch: bool = True):
    one = st.lists(st.one_of(FINITE, st.integers(-1000, 1000)), min_size=dim, max_size=dim)
    if not batch:
        return one
    return st.one_of(one, st.lists(one, min_size=1, max_size=3),
                     one.map(lambda v: np.array(v, dtype=np.float64)),
                     one.map(lambda v: np.array(v, dtype=np.float32)))


def _filters(typed: bool = False):
    """Random filter trees: on any names and literals, or (typed) on the test table's columns
    with literals of their types."""
    if typed:
        letters = st.sampled_from(["a", "b", "c", "d"])
        leaf = st.one_of(
            st.builds(lambda v: col("price") < v, st.floats(0, 100)),
            st.builds(lambda v: col("price") >= v, st.integers(0, 100)),
            st.builds(lambda v: col("cat") == v, letters),
            st.builds(lambda vs: col("cat").isin(vs), st.lists(letters, max_size=3)),
            st.builds(lambda a, b: col("id").between(a, b), st.integers(0, N), st.integers(0, N)),
            st.builds(lambda: col("price").is_null()),
            st.builds(lambda p: col("cat").like(p), st.sampled_from(["a%", "_", "%"])),
            st.builds(lambda w: match("body", w), st.sampled_from(WORDS)))
    else:
        leaf = st.one_of(
            st.builds(lambda c, v: col(c) < v, NAMES, LITERALS),
            st.builds(lambda c, v: col(c) == v, NAMES, LITERALS),
            st.builds(lambda c, vs: col(c).isin(vs), NAMES, st.one_of(
                st.lists(st.integers(-2**62, 2**62), max_size=3), st.lists(FINITE, max_size=3),
                st.lists(st.text(max_size=8), max_size=3))),
            st.builds(lambda c, a, b: col(c).between(a, b), NAMES, FINITE, FINITE),
            st.builds(lambda c: col(c).is_null(), NAMES),
            st.builds(lambda c, p: col(c).like(p), NAMES, st.text(max_size=5)),
            st.builds(lambda w: match("body", w), st.sampled_from(WORDS)))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda a, b: a & b, inner, inner), st.builds(lambda a, b: a | b, inner, inner),
        st.builds(lambda a: ~a, inner)), max_leaves=6)


KNOBS = st.fixed_dictionaries({}, optional={
    "nprobe": st.integers(1, 64), "eps2": st.floats(0, 2), "budget": st.integers(0, 10**6),
    "E": st.integers(1, 100), "w": st.one_of(st.integers(1, 100), st.just("growing")),
    "force_plan": st.sampled_from(["flat", "exact", "index", "scalar", "postfilter"]),
    "stop_stat": st.sampled_from(["median", "min"]), "exact": st.booleans(),
    "scan_knobs": st.fixed_dictionaries({}, optional={"batch_partitions": st.integers(1, 8),
                                                      "eps2": st.floats(0, 1)}),
    "schedule": st.sampled_from(["auto", "adaptive", "round-robin"]),
    "batch_size": st.integers(1, 512)})


@st.composite
def requests(draw, typed: bool = False) -> SearchRequest:
    """Random valid requests: valid as values (names are for a schema to judge), or (typed)
    also for the test table: its columns, literals of their types."""
    kind = draw(st.sampled_from(["vector", "text", "sparse", "multi", "hybrid-text",
                                 "hybrid-sparse", "hybrid-all"]))
    kw: dict = {}
    if kind in ("vector",):
        kw["vector"] = draw(_vectors())
    if kind.startswith("hybrid"):
        kw["vector"] = draw(_vectors(batch=False))
    if kind in ("vector",) or kind.startswith("hybrid"):
        names = st.sampled_from(["v", "w"])
        kw["column"] = draw(names if typed else st.one_of(st.none(), names))
    if kind in ("text", "hybrid-text", "hybrid-all"):
        kw["text"] = draw(st.text(min_size=1, max_size=20).filter(str.strip))
        kw["text_column"] = draw(st.one_of(st.none(), st.just("body")))
    if kind in ("sparse", "hybrid-sparse", "hybrid-all"):
        idx = draw(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=5, unique=True))
        kw["sparse"] = {i: draw(FINITE) for i in idx}
        kw["sparse_column"] = draw(st.one_of(st.none(), st.just("sv")))
    if kind == "multi":
        cols = draw(st.lists(st.sampled_from(["v", "w"]), min_size=1, max_size=2, unique=True))
        kw["vectors"] = {c: draw(_vectors(batch=False)) for c in cols}
        if draw(st.booleans()):
            kw["weights"] = {c: draw(st.floats(0, 10)) for c in cols}
    if draw(st.booleans()):
        kw["where"] = draw(st.one_of(_filters(typed), _filters(typed).map(lambda e: e.to_sql())))
    kw["limit"] = draw(st.one_of(st.none(), st.integers(1, MAX_LIMIT)))
    if draw(st.booleans()):
        lo = draw(st.one_of(st.none(), st.floats(0, 10)))
        hi = draw(st.one_of(st.none(), st.floats(lo or 0, 20)))
        if lo is not None or hi is not None:
            kw["distance_range"] = (lo, hi)
    if draw(st.booleans()):
        kw["select"] = draw(st.lists(st.sampled_from(["id", "price", "cat", "body", "v"]),
                                     unique=True, max_size=4))
    r = SearchRequest(**kw)
    if len(r.sources) > 1 and draw(st.booleans()):
        if draw(st.booleans()):
            r = r.replace(fuse=("rrf", {"k": draw(st.floats(0, 100))}))
        else:
            weights = draw(st.one_of(
                st.lists(st.floats(0, 5), min_size=len(r.sources), max_size=len(r.sources)),
                st.fixed_dictionaries({s: st.floats(0, 5) for s in r.sources})))
            r = r.replace(fuse=("linear", {"weights": weights,
                                           "normalize": draw(st.sampled_from(["minmax",
                                                                              "zscore"]))}))
    return r.replace(params=draw(KNOBS))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_requests_survive_json_exactly(r):
    doc = r.to_json()
    wire = json.loads(json.dumps(doc, allow_nan=False))     # what travels is plain JSON
    back = SearchRequest.from_json(wire)
    assert back == r and back.to_json() == doc
    SearchRequestBody.model_validate(wire)                  # the OpenAPI document admits it
    if r.vector is not None:
        assert back.vector.dtype == np.float32 and np.array_equal(back.vector, r.vector)


def test_request_equality_sees_every_field():
    r = SearchRequest(vector=[1.0, 2.0, 3.0, 4.0], where="price < 3", limit=5,
                      params={"nprobe": 4})
    nudged = np.nextafter(r.vector, np.float32(np.inf))      # one float32 step
    for other in (r.replace(vector=nudged), r.replace(where="price < 3.0"),
                  r.replace(limit=6), r.replace(params={"nprobe": 5}),
                  r.replace(select=["id"]), r.replace(vector=r.vector[None, :])):
        assert other != r
    assert SearchRequest.from_json(r.to_json()) == r


@pytest.mark.parametrize("body, cls", [
    ({"vector": [1, 2, 3, 4], "steps": []}, unidb.QueryError),
    ({"vector": "1,2,3,4"}, unidb.ValidationError),
    ({"vector": [[1, 2], [3]]}, unidb.ValidationError),
    ({"vector": [1, 2, 3, float("inf")]}, unidb.ValidationError),
    ({"vector": [1e39, 0, 0, 0]}, unidb.ValidationError),
    ({"sparse": [[1], [0.5]]}, unidb.ValidationError),
    ({"vector": [1, 2, 3, 4], "where": 5}, unidb.QueryError),
    ({"vector": [1, 2, 3, 4], "where": {"expr": "x"}}, unidb.QueryError),
    ({"vector": [1, 2, 3, 4], "distance_range": [0, 1]}, unidb.QueryError),
    ({"vector": [1, 2, 3, 4], "distance_range": {"max": 1, "maxx": 2}}, unidb.QueryError),
    ({"vector": [1, 2, 3, 4], "fuse": "rrf"}, unidb.QueryError),
    ({"vector": [[1, 2, 3, 4]], "text": "red"}, unidb.ValidationError),
    ({"vectors": {"v": [1, 2, 3, 4]}, "text": "red"}, unidb.QueryError),
    ({"text": "red", "weights": {"v": 1}}, unidb.QueryError),
    ([1, 2, 3, 4], unidb.QueryError),
])
def test_bad_request_json(body, cls):
    with pytest.raises(cls):
        SearchRequest.from_json(body)


# -- remote results equal embedded results ---------------------------------------------------------
@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(embedded table, remote table) of one table: the server in-process on the same open
    database."""
    path = tmp_path_factory.mktemp("req") / "db.unidb"
    db = unidb.connect(path)
    t = _table(db)
    key = KeyStore(path).create("read")
    app = create_app(path, ServerConfig(access_log=False), db=db)
    with TestClient(app) as client:
        remote = RemoteDatabase("http://testserver", api_key=key, transport=client._transport)
        yield t, remote.open_table("t")
        remote.close()
    db.close()


def _outcome(builder_cls, table, r: SearchRequest):
    """What running `r` gives: (table, explain summary) or the error class."""
    try:
        b = builder_cls.from_request(table, r)
        rows = b.to_arrow()
        ex = b.explain()
        ex = ex if isinstance(ex, list) else [ex]
        return rows, [(e["plan"] if isinstance(e, dict) else e.plan,
                       e["rows_matched"] if isinstance(e, dict) else e.rows_matched) for e in ex]
    except UnidbError as e:
        return type(e)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(r=st.one_of(requests(typed=True), requests()))
def test_remote_results_equal_embedded(both, r):
    local, remote = both
    r = r.replace(limit=min(r.k, 50))              # one server round trip stays small
    got_local = _outcome(SearchBuilder, local, r)
    got_remote = _outcome(RemoteSearchBuilder, remote, r)
    if isinstance(got_local, type):
        assert got_remote is got_local
        return
    assert not isinstance(got_remote, type), got_remote
    (lt, lex), (rt, rex) = got_local, got_remote
    assert rt.equals(lt), (r.to_json(), lt.slice(0, 3), rt.slice(0, 3))
    assert rex == lex


def test_remote_results_equal_embedded_on_each_path(both):
    """The same, for one request of each access path (not left to chance)."""
    local, remote = both
    q = np.random.default_rng(5).standard_normal(DIM)
    for r in (SearchRequest(vector=q, column="v", where="price < 50", limit=7),
              SearchRequest(vector=q, column="w", limit=4, select=["price"]),
              SearchRequest(vector=np.stack([q, -q]), column="v", limit=3),
              SearchRequest(vector=q, column="v", distance_range=(None, 1.5)),
              SearchRequest(text="red shoe", where=match("body", "hat"), limit=6),
              SearchRequest(sparse={1: 1.0, 4: 2.0}, limit=5),
              SearchRequest(vector=q, column="w", text="lamp", sparse={2: 1.0}, limit=8,
                            fuse=("linear", {"weights": {"vector": 1, "text": 0.5,
                                                         "sparse": 0.1}})),
              SearchRequest(vectors={"v": q, "w": q}, weights={"v": 1, "w": 2}, limit=5,
                            where=and_(col("cat") == "a", col("price") > 10))):
        lt, lex = _outcome(SearchBuilder, local, r)
        rt, rex = _outcome(RemoteSearchBuilder, remote, r)
        assert lt.num_rows > 0 and rt.equals(lt) and rex == lex, r.to_json()
