"""The audit log as it is read: deliveries with their decisions, and a run's error summary."""

from __future__ import annotations

import sqlite3
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


def audit_rows(
    conn: sqlite3.Connection,
    *,
    run_id: str | None = None,
    user_id: str | None = None,
    state: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Deliveries (AUDIT_COLUMNS) matching every filter given, by id; at most `limit` (0: all)."""
    sql = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM deliveries WHERE 1=1"
    params: list[Any] = []
    for column, value in (("run_id", run_id), ("user_id", user_id), ("state", state)):
        if value:
            sql += f" AND {column}=?"
            params.append(value)
    sql += " ORDER BY id"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    return [dict(r) for r in conn.execute(sql, params)]


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
