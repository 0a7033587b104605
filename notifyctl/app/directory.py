"""The user directory as the CLI manages it: users, preferences and suppressions.

Preferences and suppressions are written as opt-outs (app/optouts.py): they hold before the next
message on every backend, Redis workers included.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from notifyctl.addresses import AddressError
from notifyctl.app import optouts
from notifyctl.app.context import Context
from notifyctl.errors import InputError, NotFound
from notifyctl.models import CHANNELS
from notifyctl.settings import Settings
from notifyctl.store import cluster, directory
from notifyctl.store.db import connect


def show_user(ctx: Context, user_id: str) -> dict[str, Any]:
    """One user's fields, devices and endpoint, with the webhook secret hidden, and preferences."""
    user = directory.get_user(ctx.conn, user_id)
    if user is None:
        raise NotFound(f"unknown user '{user_id}'")
    prefs = directory.preferences(ctx.conn, user_id)
    data = user.model_dump(exclude={"webhook_secret"})
    data["webhook_secret"] = "whsec_…(hidden)" if user.webhook_secret else None
    data["preferences"] = prefs
    return data


def known_channel(channel: str) -> str:
    """`channel` if it is one notifyctl has, else InputError naming them."""
    if channel not in CHANNELS:
        raise InputError(f"--channel: unknown channel '{channel}' (known: {', '.join(CHANNELS)})")
    return channel


def set_preference(ctx: Context, user_id: str, channel: str, category: str, on: bool) -> None:
    """Opt a known user in (on) or out of a category ('*': all) on a channel; audited. The category
    must be one the settings define: a typo would record a preference nothing ever reads."""
    known_channel(channel)
    if category != "*" and category not in ctx.settings.categories:
        defined = ", ".join(sorted(ctx.settings.categories)) or "none"
        raise InputError(f"--category: '{category}' is not a defined category (defined: {defined}; or * for all)")
    if directory.get_user(ctx.conn, user_id) is None:
        raise NotFound(f"unknown user '{user_id}'")
    optouts.set_preference(ctx.conn, ctx.settings, user_id, channel, category, on, "cli")


def preferences(ctx: Context, user_id: str) -> list[dict[str, Any]]:
    """A user's preferences: channel, category, enabled, source, updated."""
    if directory.get_user(ctx.conn, user_id) is None:
        raise NotFound(f"unknown user '{user_id}'")
    return directory.preferences(ctx.conn, user_id)


def suppress(ctx: Context, channel: str, address: str, reason: str) -> str:
    """Never contact an address on a channel again, from the next message on (workers included);
    returns it normalised."""
    known_channel(channel)
    try:
        return optouts.suppress(ctx.conn, ctx.settings, channel, address, reason, "cli")
    except (AddressError, ValueError) as exc:
        raise InputError(str(exc)) from exc


def lift_suppression(ctx: Context, channel: str, address: str) -> bool:
    """Lift a suppression; False when there was none."""
    try:
        return directory.remove_suppression(ctx.conn, channel, address)
    except AddressError as exc:
        raise InputError(str(exc)) from exc


def suppressions(ctx: Context, channel: str | None = None) -> list[dict[str, Any]]:
    """Suppressions, oldest first: channel, address, reason, source, created."""
    return directory.suppressions(ctx.conn, channel)


def cluster_runs(settings: Settings, redis_url: str) -> list[str]:
    """The runs of this installation's database published to the Redis at `redis_url` (read-only:
    no database is created for the question)."""
    path = settings.database_path
    if not path.is_file():
        return []
    conn = connect(path, migrate=False)
    try:
        return [run.run_id for run in cluster.attached(conn) if run.redis_url == redis_url]
    except sqlite3.OperationalError:  # a database from before cluster_runs existed
        return []
    finally:
        conn.close()
