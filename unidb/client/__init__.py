"""The remote client: `unidb.connect("http://host:7878", api_key=...)` returns a
`RemoteDatabase` with the same API as the embedded `Database`."""
from unidb.client.remote import RemoteDatabase, RemoteSearchBuilder, RemoteTable

__all__ = ["RemoteDatabase", "RemoteTable", "RemoteSearchBuilder"]
