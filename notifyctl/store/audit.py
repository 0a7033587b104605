"""The audit log as it is read: deliveries with their decisions, and a run's error summary."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

AUDIT_COLUMNS = (
    "id",
    "run_id",
    "line",
    "user_id",
    "channel",
    "address",
    "event_id",
    "state",
    "reason",
    "defer_until",
    "provider",
    "provider_message_id",
    "message_id",
    "template",
    "template_version",
    "category",
    "attempts",
    "error_class",
    "error_message",
    "in_doubt",
    "redrive_of",
    "receipt_status",
    "created",
    "updated",
)


def _where(run_id: str | None, user_id: str | None, state: str | None) -> tuple[str, list[Any]]:
    sql = " WHERE 1=1"
    params: list[Any] = []
    for column, value in (("run_id", run_id), ("user_id", user_id), ("state", state)):
        if value:
            sql += f" AND {column}=?"
            params.append(value)
    return sql, params


def iter_audit_rows(
    conn: sqlite3.Connection,
    *,
    run_id: str | None = None,
    user_id: str | None = None,
    state: str | None = None,
    limit: int = 0,
    newest_first: bool = False,
) -> Iterator[dict[str, Any]]:
    """Deliveries (AUDIT_COLUMNS) matching every filter given, by id (oldest or newest first); at
    most `limit` (0: all). Read from the cursor row by row: an export of any size stays small."""
    where, params = _where(run_id, user_id, state)
    sql = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM deliveries{where} ORDER BY id {'DESC' if newest_first else 'ASC'}"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    cursor = conn.execute(sql, params)
    try:
        for row in cursor:
            yield dict(zip(AUDIT_COLUMNS, row, strict=True))
    finally:
        cursor.close()


def count_audit_rows(
    conn: sqlite3.Connection, *, run_id: str | None = None, user_id: str | None = None, state: str | None = None
) -> int:
    """How many deliveries match the filters (for "showing N of M")."""
    where, params = _where(run_id, user_id, state)
    return int(conn.execute(f"SELECT count(*) FROM deliveries{where}", params).fetchone()[0])


def run_errors(conn: sqlite3.Connection, run_id: str) -> list[list[Any]]:
    """A run's 20 most frequent errors: [error class, message (80 characters), count]."""
    return [
        list(r)
        for r in conn.execute(
            """SELECT error_class, substr(error_message, 1, 80), count(*) FROM deliveries
           WHERE run_id=? AND error_class IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20""",
            (run_id,),
        )
    ]


def provider_requests(conn: sqlite3.Connection, run_id: str) -> int:
    """How many requests a run's deliveries made to providers (every attempt)."""
    return int(
        conn.execute(
            "SELECT count(*) FROM attempts a JOIN deliveries d ON d.id=a.delivery_id WHERE d.run_id=?", (run_id,)
        ).fetchone()[0]
    )
