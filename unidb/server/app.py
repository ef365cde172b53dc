"""`create_app(db_path, config)`: the FastAPI application behind `unidb serve`.

The process opens the embedded `Database` once (it holds the writer lock; writes are
serialised by the tables' own locks) and closes it on shutdown, after uvicorn has let
in-flight requests finish. In front of the routes sits one ASGI middleware, `Gate`, which for
every request: finds the route, checks the API key and its role (before any body is read),
enforces the body size limit, and records metrics and a JSON log line.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Match

from unidb.errors import AuthError, LimitError, UnidbError
from unidb.protocol import errors as http_errors
from unidb.server.auth import ANONYMOUS_ADMIN, KeyStore, authorize, key_from_headers
from unidb.server.limits import Limits
from unidb.server.metrics import Metrics
from unidb.server.routes import ADMIN, JSON, NONE, READ, router

log = logging.getLogger("unidb.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7878
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    auth: bool = True                       # False only with --no-auth, on loopback
    limits: Limits = field(default_factory=Limits)
    backup_dir: Path | None = None          # backups over HTTP stay inside this folder
    durability: str = "sync"
    access_log: bool = True

    def check(self) -> None:
        """Refuse unsafe combinations (no auth on a reachable address)."""
        if not self.auth and not is_loopback(self.host):
            raise AuthError(f"--no-auth is refused on host {self.host!r}: without keys anyone "
                            f"who can reach it can read and write; bind 127.0.0.1 or use keys")


def is_loopback(host: str) -> bool:
    import ipaddress
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(db_path: str | Path, config: ServerConfig | None = None, db: Any = None
               ) -> FastAPI:
    """The ASGI app serving the database at `db_path` (`db`: an already open Database to use
    instead, left open on shutdown)."""
    config = config or ServerConfig()
    config.check()
    db_path = Path(db_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import unidb
        own = db is None
        app.state.db = unidb.connect(db_path, durability=config.durability) if own else db
        if config.auth and not len(app.state.keys):
            log.warning("no API keys yet: every request will get 401; create one with "
                        "`unidb keys create %s --role admin`", db_path)
        log.info("serving", extra={"db": str(db_path), "tables": app.state.db.table_names()})
        try:
            yield
        finally:
            if own:
                app.state.db.close()            # checkpoint; releases the writer lock
            log.info("stopped", extra={"db": str(db_path)})

    import unidb
    app = FastAPI(title="unidb", version=unidb.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="The unidb Database/Table/search API over HTTP. Every route "
                              "but /health needs an API key (`Authorization: Bearer <key>` or "
                              "`X-API-Key`); `x-unidb-role` names the role it needs.")
    app.state.config = config
    app.state.keys = KeyStore(db_path)
    app.state.metrics = Metrics()
    app.include_router(router)
    _install_error_handlers(app)
    app.add_middleware(Gate, api=app)
    app.openapi = lambda: _openapi(app)
    return app


# -- errors ------------------------------------------------------------------------------------
def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UnidbError)
    async def unidb_error(request: Request, exc: UnidbError):
        status = http_errors.status_of(exc)
        return JSON(http_errors.error_body(exc, status), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        msg = f"invalid request body at {where}: {first.get('msg', 'malformed')}"
        from unidb.errors import ValidationError
        return JSON(http_errors.error_body(ValidationError(msg), 422), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        cls = http_errors._by_status(exc.status_code)
        err = cls(str(exc.detail))
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path served by
            # several routes (GET and POST /tables) allows all of theirs.
            headers = {**(headers or {}), "Allow": ", ".join(_methods_at(request.url.path))}
        return JSON(http_errors.error_body(err, exc.status_code), status_code=exc.status_code,
                    headers=headers)


def _methods_at(path: str) -> list[str]:
    """Every HTTP method some route serves at `path`."""
    methods: set[str] = set()
    for r in router.routes:
        if r.path_regex.match(path):
            methods |= set(r.methods or ())
    return sorted(methods)


# -- the gate ----------------------------------------------------------------------------------
class Gate:
    """Route lookup, authentication + role check, body size limit, metrics and access log."""

    def __init__(self, app, api: FastAPI):
        self.app = app
        self.api = api

    def _route(self, scope) -> tuple[str, str | None]:
        """(route template, role it needs) — None for a path no route serves."""
        for r in router.routes:          # our routes themselves: FastAPI wraps included ones
            match, _ = r.matches(scope)
            if match is Match.FULL:
                return r.path, (r.openapi_extra or {}).get("x-unidb-role", ADMIN)
        if scope["path"] == self.api.openapi_url:
            return scope["path"], READ
        return "unmatched", None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.api.state
        t0 = time.perf_counter()
        route_name, need = self._route(scope)
        status = [500]
        key_id = None

        started = [False]

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        try:
            if need is not None and need != NONE:
                info = ANONYMOUS_ADMIN
                if state.config.auth:
                    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                               for k, v in scope.get("headers", ())}
                    info = state.keys.verify(key_from_headers(headers))
                key_id = info.id
                authorize(info, need)
                scope.setdefault("state", {})["key"] = info
            receive = self._limit_body(scope, receive, state.config.limits)
            await self.app(scope, receive, send_tracked)
        except UnidbError as exc:
            code = http_errors.status_of(exc)
            headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
            await JSON(http_errors.error_body(exc, code), status_code=code,
                       headers=headers)(scope, receive, send_tracked)
        except Exception as exc:  # noqa: BLE001 - answer 500 here so the connection stays usable
            log.exception("unhandled error", extra={"path": scope["path"]})
            if started[0]:
                raise
            await JSON(http_errors.error_body(exc, 500), status_code=500)(scope, receive,
                                                                           send_tracked)
        finally:
            seconds = time.perf_counter() - t0
            state.metrics.observe(scope["method"], route_name, status[0], seconds)
            if state.config.access_log:
                log.info("request", extra={"method": scope["method"], "route": route_name,
                                           "path": scope["path"], "status": status[0],
                                           "ms": round(seconds * 1e3, 3), "key": key_id})

    @staticmethod
    def _limit_body(scope, receive, limits: Limits):
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    size = int(v)
                except ValueError:
                    raise LimitError("bad Content-Length header") from None
                if size > limits.max_body_bytes:
                    raise limits.body_error(size)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limits.max_body_bytes:
                    # FastAPI re-raises HTTPException from body reading as it is.
                    raise HTTPException(413, str(limits.body_error(seen)))
            return message
        return limited


# -- OpenAPI -----------------------------------------------------------------------------------
def _openapi(app: FastAPI) -> dict:
    """FastAPI's document plus the API-key security schemes and each route's role."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            if op.get("x-unidb-role", "admin") != NONE:
                op["security"] = [{"bearer": []}, {"apiKey": []}]
            for status, resp in op.get("responses", {}).items():
                if int(status) >= 400:          # errors are JSON whatever the route answers
                    resp["content"] = error
    app.openapi_schema = doc
    return doc


def openapi_document(db_path: str | Path = "unidb.db") -> dict:
    """The OpenAPI document of the app (no database is opened)."""
    return create_app(db_path).openapi()
