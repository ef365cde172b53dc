"""Run a real server in a background thread (tests, notebooks, benchmarks).

    with serve_in_thread(path) as url:
        db = unidb.connect(url, api_key=key)
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from unidb.server.app import ServerConfig, create_app

STARTUP_TIMEOUT_S = 30.0


@contextmanager
def serve_in_thread(db_path: str | Path, config: ServerConfig | None = None) -> Iterator[str]:
    """Serve `db_path` on 127.0.0.1 (a free port unless config.port is set); yields the URL
    and shuts the server down (closing the database) on exit."""
    import uvicorn
    config = config or ServerConfig(port=0, access_log=False)
    app = create_app(db_path, config)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port,
                                           log_config=None, access_log=False,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="unidb-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{config.host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)
