"""Idempotency keys: (user, template, logical event id) per channel and address, kept for a window."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable

from notifyctl.store import idempotency as table


def idempotency_key(who: str, template: str, event_id: str, channel: str, address: str | None) -> str:
    raw = "\x1f".join((who, template, event_id, channel, address or ""))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class IdempotencyStore:
    """The embedded key store: the `idempotency` table. Redis mode adds the keys other databases claim."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s

    def seen(self, conn: sqlite3.Connection, keys: Iterable[str], now: float | None = None) -> dict[str, int]:
        """{key: delivery_id} for keys recorded within the window."""
        return table.seen(conn, keys, (now or time.time()) - self.window_s)

    def record(self, conn: sqlite3.Connection, entries: list[tuple[str, int, str]], now: float | None = None) -> None:
        """Remember (key, delivery_id, run_id); an expired key is replaced."""
        table.record(conn, entries, now)
