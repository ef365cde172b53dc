"""HTTP transports for the remote client: one keep-alive connection per thread.

The default uses the standard library's `http.client`: on loopback it costs ~0.4 ms per
request where httpx costs ~2 ms (measured with bench/load.py's setup), which is most of the
HTTP overhead of a search. `HttpxTransport` wraps any httpx transport (tests pass FastAPI's
in-process TestClient transport through it).
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from unidb.errors import UnidbError

# uvicorn closes idle keep-alive connections after 5 s; reconnect before that to avoid
# racing the close.
IDLE_RECONNECT_S = 4.0
# Errors that mean "this reused connection was already closed by the server".
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
          http.client.CannotSendRequest)

Reply = tuple[int, str, bytes]          # status, content type, body


# http.client sends a request's headers and body in two writes; without TCP_NODELAY, Nagle's
# algorithm holds the body until the server's delayed ACK (measured: 2.7 -> 8.5 ms per search).
class _HTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class StdlibTransport:
    def __init__(self, url: str, headers: dict[str, str], timeout: float, verify: Any = True):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UnidbError(f"server URL must be http(s)://host[:port], got {url!r}")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.headers = {"Accept": "application/json", **headers}
        self.timeout = timeout
        self.context = None
        if self.https:
            self.context = ssl.create_default_context(
                cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it was used before (may have gone stale)."""
        conn = getattr(self._local, "conn", None)
        idle = time.monotonic() - getattr(self._local, "used", 0.0)
        if conn is not None and (fresh or idle > IDLE_RECONNECT_S):
            conn.close()
            conn = None
        if conn is None:
            if self.https:
                conn = _HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                        context=self.context)
            else:
                conn = _HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
            return conn, False
        return conn, True

    def request(self, method: str, path: str, body: bytes | None,
                params: dict | None = None) -> Reply:
        url = self.prefix + path + (("?" + urlencode(params)) if params else "")
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn, reused = self._connection(fresh=attempt > 0)
            try:
                conn.request(method, url, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
            except _STALE:
                conn.close()
                if reused and attempt == 0:
                    continue             # the server had closed an idle connection: resend
                raise
            except BaseException:
                conn.close()
                raise
            self._local.used = time.monotonic()
            if r.will_close:
                conn.close()
            return r.status, r.getheader("content-type", ""), data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()


class HttpxTransport:
    def __init__(self, url: str, headers: dict[str, str], timeout: float, transport: Any,
                 verify: Any = True):
        import httpx
        self._client = httpx.Client(base_url=url, headers=headers, timeout=timeout,
                                    transport=transport, verify=verify)

    def request(self, method: str, path: str, body: bytes | None,
                params: dict | None = None) -> Reply:
        headers = {"Content-Type": "application/json"} if body is not None else None
        r = self._client.request(method, path, content=body, params=params, headers=headers)
        return r.status_code, r.headers.get("content-type", ""), r.content

    def close(self) -> None:
        self._client.close()
