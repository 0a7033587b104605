"""Inbound webhook deduplication: providers retry, and a retried message must act once."""

from __future__ import annotations

import sqlite3

from notifyctl.store.db import iso


def first_time(conn: sqlite3.Connection, sid: str, kind: str) -> bool:
    """Record an inbound message id; False when it was seen before."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO inbound_messages (sid, kind, received) VALUES (?, ?, ?)", (sid, kind, iso())
    )
    return cur.rowcount == 1
