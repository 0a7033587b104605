"""The user directory as the CLI manages it: users, preferences and suppressions.

A suppression written with a Redis URL is also mirrored to the cluster, so every worker stops
before its next send.
"""

from __future__ import annotations

from typing import Any

from notifyctl.addresses import AddressError
from notifyctl.app.context import Context
from notifyctl.errors import InputError
from notifyctl.store import directory


def show_user(ctx: Context, user_id: str) -> dict[str, Any]:
    """One user's fields, devices and endpoint, with the webhook secret hidden, and preferences."""
    user = directory.get_user(ctx.conn, user_id)
    if user is None:
        raise InputError(f"unknown user '{user_id}'")
    prefs = directory.preferences(ctx.conn, user_id)
    data = user.model_dump(exclude={"webhook_secret"})
    data["webhook_secret"] = "whsec_…(hidden)" if user.webhook_secret else None
    data["preferences"] = prefs
    return data


def set_preference(ctx: Context, user_id: str, channel: str, category: str, on: bool) -> None:
    """Opt a known user in (on) or out of a category ('*': all) on a channel; audited."""
    if directory.get_user(ctx.conn, user_id) is None:
        raise InputError(f"unknown user '{user_id}'")
    directory.set_preference(ctx.conn, user_id, channel, category, on)


def preferences(ctx: Context, user_id: str) -> list[dict[str, Any]]:
    """A user's preferences: channel, category, enabled, source, updated."""
    return directory.preferences(ctx.conn, user_id)


def suppress(ctx: Context, channel: str, address: str, reason: str, redis_url: str | None = None) -> str:
    """Never contact an address on a channel again; returns it normalised. With `redis_url`, the
    cluster's workers learn it too."""
    try:
        normalized = directory.add_suppression(ctx.conn, channel, address, reason)
    except (AddressError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    if redis_url:
        mirror_suppression(redis_url, channel, normalized, reason)
    return normalized


def lift_suppression(ctx: Context, channel: str, address: str, redis_url: str | None = None) -> bool:
    """Lift a suppression (on the cluster too with `redis_url`); False when there was none."""
    try:
        removed = directory.remove_suppression(ctx.conn, channel, address)
    except AddressError as exc:
        raise InputError(str(exc)) from exc
    if removed and redis_url:
        mirror_suppression(redis_url, channel, address, None)
    return removed


def suppressions(ctx: Context, channel: str | None = None) -> list[dict[str, Any]]:
    """Suppressions, oldest first: channel, address, reason, source, created."""
    return directory.suppressions(ctx.conn, channel)


def mirror_suppression(redis_url: str, channel: str, address: str, reason: str | None) -> None:
    """After SQLite was written: tell every worker now (reason None lifts it)."""
    from notifyctl import aio
    from notifyctl.backends.redis.mirror import mirror_add, mirror_remove
    from notifyctl.backends.redis.streams import connect

    async def mirror() -> None:
        client = connect(redis_url)
        try:
            if reason is None:
                await mirror_remove(client, channel, address)
            else:
                await mirror_add(client, channel, address, reason)
        finally:
            await client.aclose()

    aio.run(mirror())
