"""API keys of `unidb serve`: created by the CLI, stored hashed, checked on every request.

A key looks like ``udb_<id>_<secret>``: the id (8 hex characters) names the key in
`unidb keys list/revoke` and in logs; the secret (32 random bytes) is never stored. The file
``<db>/server/keys.json`` holds, per key, a random salt and SHA-256(salt || secret). A
single salted hash is enough here: secrets are 256-bit random values, so slow password
hashing (scrypt, PBKDF2) would add per-request cost without adding any security.
The server re-reads the file when it changes, so keys created or revoked while it runs take
effect at once.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import hmac
import os
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from unidb.errors import AuthError, NotFoundError, ValidationError
from unidb.storage import files

ROLES = ("admin", "read")
ADMIN, READ = "admin", "read"
KEY_PREFIX = "udb_"
KEYS_FILE = Path("server") / "keys.json"
SECRET_BYTES = 32
SALT_BYTES = 16


@dataclass(frozen=True)
class KeyInfo:
    id: str
    role: str
    name: str = ""


ANONYMOUS_ADMIN = KeyInfo(id="-", role=ADMIN, name="no-auth")


def keys_path(db_path: str | os.PathLike) -> Path:
    return Path(db_path) / KEYS_FILE


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


class KeyStore:
    """The hashed keys of one database folder."""

    def __init__(self, db_path: str | os.PathLike):
        self.path = keys_path(db_path)
        self._lock = threading.Lock()
        self._stat: tuple | None = None
        self._keys: dict[str, dict] = {}

    # -- reading ---------------------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        """The keys on disk, re-read when the file changed since the last look."""
        try:
            st = os.stat(self.path)
            stat = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stat = None
        with self._lock:
            if stat != self._stat:
                data = files.read_json(self.path) if stat is not None else {"keys": []}
                self._keys = {k["id"]: k for k in data.get("keys", [])}
                self._stat = stat
            return self._keys

    def verify(self, key: str | None) -> KeyInfo:
        """The key's id and role; AuthError (401) when it is missing or not valid."""
        if not key:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' or "
                            "'X-API-Key: <key>' (create one with `unidb keys create`)")
        parts = key.split("_", 2)
        entry = None
        if len(parts) == 3 and key.startswith(KEY_PREFIX):
            entry = self._load().get(parts[1])
        # Hash even for unknown ids so a wrong id is not faster to reject than a wrong secret.
        salt = bytes.fromhex(entry["salt"]) if entry else b"\0" * SALT_BYTES
        good = hmac.compare_digest(_digest(salt, parts[-1]), entry["hash"] if entry else "")
        if entry is None or not good:
            raise AuthError("invalid API key")
        return KeyInfo(id=entry["id"], role=entry["role"], name=entry.get("name", ""))

    def list(self) -> list[dict]:
        """Key ids, roles, names and creation times (never secrets or hashes)."""
        return [{k: e.get(k, "") for k in ("id", "role", "name", "created")}
                for e in self._load().values()]

    def __len__(self) -> int:
        return len(self._load())

    # -- writing (the CLI) -----------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict]:
        files.ensure_dir(self.path.parent)
        with open(self.path.with_name("keys.lock"), "a+") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            data = files.read_json(self.path) if self.path.exists() else {"keys": []}
            yield data
            files.atomic_write_json(self.path, data)
            os.chmod(self.path, 0o600)

    def create(self, role: str, name: str = "") -> str:
        """Make a new key with `role`; returns the key (the only time it is ever shown)."""
        if role not in ROLES:
            raise ValidationError(f"role must be one of {ROLES}, got {role!r}")
        secret = secrets.token_urlsafe(SECRET_BYTES)
        salt = secrets.token_bytes(SALT_BYTES)
        with self._locked() as data:
            ids = {k["id"] for k in data["keys"]}
            kid = secrets.token_hex(4)
            while kid in ids:
                kid = secrets.token_hex(4)
            data["keys"].append({
                "id": kid, "role": role, "name": name, "salt": salt.hex(),
                "hash": _digest(salt, secret),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            })
        return f"{KEY_PREFIX}{kid}_{secret}"

    def revoke(self, key_id: str) -> None:
        with self._locked() as data:
            before = len(data["keys"])
            data["keys"] = [k for k in data["keys"] if k["id"] != key_id]
            if len(data["keys"]) == before:
                raise NotFoundError(f"no API key with id {key_id!r}; see `unidb keys list`")


def key_from_headers(headers: dict[str, str]) -> str | None:
    """The API key of a request: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

    A credential the server cannot read is refused, never skipped: an Authorization header
    that is not `Bearer <key>`, or two different keys, is an AuthError even when the other
    header holds a valid key (a request must not pass on a credential it did not mean)."""
    bearer = None
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("the Authorization header must be 'Bearer <key>' (or send the key "
                            "as X-API-Key)")
        bearer = value.strip()
    api_key = headers.get("x-api-key")
    if bearer is not None and api_key is not None and api_key != bearer:
        raise AuthError("the request carries two different keys (Authorization and "
                        "X-API-Key); send one")
    return bearer or api_key or None


def authorize(info: KeyInfo, role: str) -> None:
    """AuthError (403) when the key's role does not allow `role` work."""
    if role == ADMIN and info.role != ADMIN:
        err = AuthError(f"API key {info.id} has role {info.role!r}, which cannot write or "
                        f"administer; use an admin key")
        err.http_status = 403
        raise err
