"""The `idempotency` table: which delivery holds a key (user, template, logical event id, channel,
address), kept for a window."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from notifyctl.store.db import in_chunks


def seen(conn: sqlite3.Connection, keys: Iterable[str], since: float) -> dict[str, int]:
    """{key: delivery_id} for keys recorded after `since` (epoch seconds)."""
    found: dict[str, int] = {}
    for chunk, marks in in_chunks(list(keys)):
        for key, delivery_id in conn.execute(
            f"SELECT key, delivery_id FROM idempotency WHERE key IN ({marks}) AND created > ?", [*chunk, since]
        ):
            found[key] = delivery_id
    return found


def record(conn: sqlite3.Connection, entries: list[tuple[str, int, str]], stamp: float | None = None) -> None:
    """Remember (key, delivery_id, run_id); an expired key is replaced."""
    stamp = stamp or time.time()
    conn.executemany(
        "INSERT OR REPLACE INTO idempotency (key, delivery_id, run_id, created) VALUES (?, ?, ?, ?)",
        [(key, delivery_id, run_id, stamp) for key, delivery_id, run_id in entries],
    )
