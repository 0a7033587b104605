"""Customers' webhook endpoints: shown (secrets hidden), secrets rotated, re-enabled, mutual TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from notifyctl.app.context import Context
from notifyctl.store import endpoints


def show(ctx: Context, user_id: str) -> dict[str, Any]:
    """A user's endpoint: URL, state, client certificate; no secret."""
    return endpoints.show(ctx.conn, user_id, ctx.clock())


def rotate_secret(ctx: Context, user_id: str, grace_hours: float) -> str:
    """A new signing secret (returned once); the old one keeps signing for `grace_hours`."""
    return endpoints.rotate_secret(ctx.conn, user_id, grace_hours, ctx.clock())


def enable(ctx: Context, user_id: str) -> bool:
    """Re-enable a disabled endpoint; False when it was not disabled."""
    return endpoints.enable(ctx.conn, user_id)


def set_client_cert(ctx: Context, user_id: str, cert: Path | None, key: Path | None) -> None:
    """Present this client certificate to the endpoint (None, None: stop presenting one)."""
    endpoints.set_client_cert(ctx.conn, user_id, cert, key)
