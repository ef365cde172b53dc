"""`unidb serve`: the Database/Table/search API over HTTP (FastAPI + uvicorn).

Importing this package stays light (no FastAPI): the remote client shares `errors` with it.
Use `unidb.server.app.create_app` for the ASGI app and `unidb.server.serve.serve` to run it.
"""
