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

from notifyctl.settings import Settings
from notifyctl.store import cluster, directory, erasure
from notifyctl.store.db import transaction
from notifyctl.store.erasure import erasure_key


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def opting_out(
    conn: sqlite3.Connection, settings: Settings, clock: Callable[[], datetime] = _now
) -> Iterator[sqlite3.Connection]:
    """The write transaction of an opt-out (store functions called inside nest as savepoints)."""
    with transaction(conn):
        yield conn
        if cluster.attached(conn):  # runs on Redis workers: imported only then
            from notifyctl.backends.redis.revocations import revoke_published

            revoke_published(conn, settings, clock())


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
    """Erase a user's personal data; their addresses stay suppressed (as keyed hashes) at once."""
    with opting_out(conn, settings):
        return erasure.forget_user(conn, user_id, erasure_key(settings))
