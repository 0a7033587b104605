"""Erasure: forget a user's personal data, keeping their addresses suppressed in hashed form."""

from __future__ import annotations

from typing import Any

from notifyctl.app.context import Context
from notifyctl.store.erasure import erasure_key, forget_user


def forget(ctx: Context, user_id: str) -> dict[str, Any]:
    """Erase a user (directory, devices, endpoint, preferences, inbox; addresses in the audit log
    become keyed hashes); returns the rows erased per table. Audited."""
    return forget_user(ctx.conn, user_id, erasure_key(ctx.settings))
