"""API keys for `notifyctl serve`: shown once at creation, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass

from notifyctl.errors import InputError
from notifyctl.store.db import iso, record_event, transaction

KEY_PREFIX = "nk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ApiKey:
    name: str
    created: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: sqlite3.Connection, name: str) -> str:
    """A new key named `name`; the returned plaintext is the only copy there will ever be."""
    if not _NAME.match(name):
        raise InputError(f"key name '{name}' must be 1-64 letters, digits, '_', '.' or '-'")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction(conn):
        if conn.execute("SELECT 1 FROM api_keys WHERE name=?", (name,)).fetchone():
            raise InputError(f"a key named '{name}' already exists (revoked keys keep their name)")
        conn.execute("INSERT INTO api_keys (name, key_hash, created) VALUES (?, ?, ?)", (name, hash_key(key), iso()))
        record_event(conn, "api_key_created", name, {})
    return key


def list_keys(conn: sqlite3.Connection) -> list[ApiKey]:
    return [
        ApiKey(row["name"], row["created"], row["revoked_at"])
        for row in conn.execute("SELECT name, created, revoked_at FROM api_keys ORDER BY created, name")
    ]


def revoke_key(conn: sqlite3.Connection, name: str) -> bool:
    """Revoke a key; False when there is no active key of that name."""
    with transaction(conn):
        cur = conn.execute("UPDATE api_keys SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (iso(), name))
        if cur.rowcount:
            record_event(conn, "api_key_revoked", name, {})
    return cur.rowcount > 0


def verify_key(conn: sqlite3.Connection, presented: str) -> str | None:
    """The name of the active key `presented` is, or None."""
    presented_hash = hash_key(presented)
    found: str | None = None
    # Compare against every active key in constant time, without an early exit on a match.
    for name, key_hash in conn.execute("SELECT name, key_hash FROM api_keys WHERE revoked_at IS NULL"):
        if hmac.compare_digest(presented_hash, key_hash):
            found = name
    return found
