"""Run the server: uvicorn in this process, one worker (the process holding the writer lock).

SIGINT/SIGTERM stop accepting connections, let in-flight requests finish (every write that
was acknowledged has already been committed to the log before its response), then close the
database, which checkpoints it.
"""
from __future__ import annotations

import logging
from pathlib import Path

from unidb.server.app import ServerConfig, create_app
from unidb.server.logs import configure

# Seconds uvicorn waits for in-flight requests after a stop signal before closing them.
GRACEFUL_SHUTDOWN_S = 30


def serve(db_path: str | Path, config: ServerConfig | None = None, log_level: str = "info"
          ) -> None:
    """Serve the database at `db_path` until interrupted."""
    import uvicorn
    config = config or ServerConfig()
    config.check()
    configure(log_level)
    app = create_app(db_path, config)
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_config=None,
                        access_log=False, lifespan="on", workers=1,
                        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                        log_level=log_level.lower())
    logging.getLogger("unidb.server").info(
        "listening", extra={"host": config.host, "port": config.port, "auth": config.auth})
    uvicorn.Server(uv).run()
