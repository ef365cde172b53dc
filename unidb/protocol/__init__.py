"""What `unidb serve` and the remote client both speak: the JSON wire format (wire.py) and the
mapping between unidb errors and HTTP responses (errors.py).

Both sides import this package and it imports neither of them (nor FastAPI nor httpx), so the
server and the client never import each other.
"""
