"""Opt-outs, written so that they hold on every backend before the next message.

Every opt-out (STOP, one-click unsubscribe, bounce, complaint, a preference turned off, a
suppression, an erasure, consent withdrawn) is written inside `opting_out(...)`: its transaction
takes the write lock first, and before it commits, the deliveries already published to Redis
workers are decided again and revoked where they may no longer go out
(backends/redis/revocations.py). In one process and in sender processes nothing more is needed: the
intent's commit reads the directory's change counter (pipeline/verify.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from notifyctl.app.erase import forget_user
from notifyctl.models import Decision
from notifyctl.settings import Settings
from notifyctl.store import cluster, directory, outbox
from notifyctl.store.db import transaction
from notifyctl.store.erasure import ERASED_REASON
from notifyctl.store.secrets import installation_secret


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def opting_out(
    conn: sqlite3.Connection,
    settings: Settings,
    clock: Callable[[], datetime] = _now,
    revoke: dict[int, Decision] | None = None,
) -> Iterator[dict[int, Decision]]:
    """The write transaction of an opt-out (store functions called inside nest as savepoints). What
    the caller adds to the yielded mapping is revoked whatever policy says (deliveries of an erased
    user)."""
    forced: dict[int, Decision] = dict(revoke or {})
    with transaction(conn):
        yield forced
        if cluster.attached(conn):  # runs on Redis workers: imported only then
            from notifyctl.backends.redis.revocations import revoke_published

            revoke_published(conn, settings, clock(), forced)


def set_preference(
    conn: sqlite3.Connection, settings: Settings, user_id: str, channel: str, category: str, enabled: bool, source: str
) -> None:
    """A preference; turned off (or consent withdrawn), it holds before the user's next message."""
    with opting_out(conn, settings):
        directory.set_preference(conn, user_id, channel, category, enabled, source)


def suppress(conn: sqlite3.Connection, settings: Settings, channel: str, address: str, reason: str, source: str) -> str:
    """Never contact an address on a channel again, from the next message on; returns it normalised."""
    with opting_out(conn, settings):
        return directory.add_suppression(conn, channel, address, reason, source)


def forget(conn: sqlite3.Connection, settings: Settings, user_id: str) -> dict[str, Any]:
    """Erase a user's personal data; their addresses stay suppressed (as keyed hashes) at once. Their
    deliveries not yet sent are skipped first (after the erasure they would carry erased labels, which
    no suppression matches), and those already at Redis workers are revoked."""
    erased = Decision.skip(f"suppressed:{ERASED_REASON}")
    with opting_out(conn, settings, revoke={}) as revoke:
        in_flight = outbox.skip_unsent_of_user(conn, user_id, erased.reason or "")
        revoke.update(dict.fromkeys(in_flight, erased))
        return forget_user(conn, user_id, installation_secret(conn, settings).erasure_key)
