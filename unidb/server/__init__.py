"""`unidb serve`: the Database/Table/search API over HTTP (FastAPI + uvicorn).

Importing this package stays light (no FastAPI). What the remote client shares with the server
(wire format, error mapping) lives in unidb/protocol/, below both.
Use `unidb.server.app.create_app` for the ASGI app and `unidb.server.serve.serve` to run it.
"""
