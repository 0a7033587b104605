"""API keys for `notifyctl serve`: created (shown once), listed, revoked. Only a hash is stored."""

from __future__ import annotations

from notifyctl.app.context import Context
from notifyctl.store import keys
from notifyctl.store.keys import ApiKey


def create_key(ctx: Context, name: str) -> str:
    """A new key named `name`; the returned plaintext is the only copy there will ever be."""
    return keys.create_key(ctx.conn, name)


def list_keys(ctx: Context) -> list[ApiKey]:
    """Every key's name and dates (revoked ones included)."""
    return keys.list_keys(ctx.conn)


def revoke_key(ctx: Context, name: str) -> bool:
    """Revoke a key; False when there is no active key of that name."""
    return keys.revoke_key(ctx.conn, name)
