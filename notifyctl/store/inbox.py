"""The in-app inbox table: messages written by the in-app provider, read and marked by the API.

A message row is keyed by delivery id, so a re-send of the same delivery (retry, in-doubt resume)
finds the row already there instead of adding a second one. Pages go backwards by message id.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from notifyctl.store.db import connect, dumps, iso, loads, transaction

_INSERT = """
    INSERT INTO inbox (user_id, delivery_id, title, body, data, created)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT(delivery_id) DO NOTHING
"""


def connect_writer(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection for writing messages, with its own busy timeout (the in-app provider keeps it
    short, so that a locked database becomes a retryable error instead of a stalled worker)."""
    conn = connect(path)
    conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
    return conn


def add_message(
    conn: sqlite3.Connection, user_id: str, delivery_id: int, title: str, body: str, data: dict[str, Any]
) -> int:
    """Write a delivery's message once; returns its id (the existing row's on a re-send)."""
    with transaction(conn):
        conn.execute(_INSERT, (user_id, delivery_id, title, body, dumps(data), iso()))
        found = conn.execute("SELECT id FROM inbox WHERE delivery_id = ?", (delivery_id,)).fetchone()
    return int(found[0])


def _message(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "data": loads(row["data"]) or {},
        "created": row["created"],
        "read_at": row["read_at"],
        "delivery_id": row["delivery_id"],
    }


def list_inbox(
    conn: sqlite3.Connection, user_id: str, *, unread_only: bool, limit: int, cursor: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of a user's messages, newest first, and the cursor of the next (older) page, if any."""
    sql = "SELECT id, delivery_id, title, body, data, created, read_at FROM inbox WHERE user_id=?"
    params: list[Any] = [user_id]
    if unread_only:
        sql += " AND read_at IS NULL"
    if cursor is not None:
        sql += " AND id<?"
        params.append(cursor)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit + 1]).fetchall()
    messages = [_message(r) for r in rows[:limit]]
    return messages, (messages[-1]["id"] if len(rows) > limit else None)


def unread_count(conn: sqlite3.Connection, user_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM inbox WHERE user_id=? AND read_at IS NULL", (user_id,)).fetchone()[0])


def mark_read(conn: sqlite3.Connection, user_id: str, message_id: int) -> str | None:
    """The message's read time (the first one: marking twice changes nothing); None if not theirs."""
    with transaction(conn):
        conn.execute(
            "UPDATE inbox SET read_at=COALESCE(read_at, ?) WHERE id=? AND user_id=?", (iso(), message_id, user_id)
        )
        row = conn.execute("SELECT read_at FROM inbox WHERE id=? AND user_id=?", (message_id, user_id)).fetchone()
    return None if row is None else str(row["read_at"])
