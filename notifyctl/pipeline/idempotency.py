"""Idempotency keys: (user, template, logical event id) per channel and address, kept for a window."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable

from notifyctl.store.db import in_chunks


def idempotency_key(who: str, template: str, event_id: str, channel: str, address: str | None) -> str:
    raw = "\x1f".join((who, template, event_id, channel, address or ""))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class IdempotencyStore:
    """The embedded key store: the `idempotency` table. Redis mode shares keys across machines."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s

    def seen(self, conn: sqlite3.Connection, keys: Iterable[str], now: float | None = None) -> dict[str, int]:
        """{key: delivery_id} for keys recorded within the window."""
        cutoff = (now or time.time()) - self.window_s
        keys = list(keys)
        found: dict[str, int] = {}
        for chunk, marks in in_chunks(keys):
            for key, delivery_id in conn.execute(
                f"SELECT key, delivery_id FROM idempotency WHERE key IN ({marks}) AND created > ?", [*chunk, cutoff]
            ):
                found[key] = delivery_id
        return found

    def record(self, conn: sqlite3.Connection, entries: list[tuple[str, int, str]], now: float | None = None) -> None:
        """Remember (key, delivery_id, run_id); an expired key is replaced."""
        stamp = now or time.time()
        conn.executemany(
            "INSERT OR REPLACE INTO idempotency (key, delivery_id, run_id, created) VALUES (?, ?, ?, ?)",
            [(key, delivery_id, run_id, stamp) for key, delivery_id, run_id in entries],
        )

    def created_at(self, conn: sqlite3.Connection, key: str) -> float | None:
        row = conn.execute("SELECT created FROM idempotency WHERE key=?", (key,)).fetchone()
        return None if row is None else float(row[0])
