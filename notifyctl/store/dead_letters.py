"""Dead letters: listing, one with its attempts, purging."""

from __future__ import annotations

import sqlite3
from typing import Any

from notifyctl.store.db import loads, record_event, transaction


def dead_letters(
    conn: sqlite3.Connection,
    *,
    run_id: str | None = None,
    channel: str | None = None,
    error_class: str | None = None,
    since: str | None = None,
) -> list[dict[str, Any]]:
    """Dead letters with their delivery's address and attempts, oldest delivery first."""
    sql = """SELECT l.delivery_id, l.run_id, l.channel, d.address, d.user_id, l.error_class, l.error_message,
                    d.attempts, l.created, l.redriven_at, l.redrive_count
             FROM dead_letters l JOIN deliveries d ON d.id = l.delivery_id WHERE 1=1"""
    params: list[Any] = []
    for column, value in (("l.run_id", run_id), ("l.channel", channel), ("l.error_class", error_class)):
        if value:
            sql += f" AND {column}=?"
            params.append(value)
    if since:
        sql += " AND l.created >= ?"
        params.append(since)
    return [dict(r) for r in conn.execute(sql + " ORDER BY l.delivery_id", params)]


def dead_letter(conn: sqlite3.Connection, delivery_id: int) -> dict[str, Any] | None:
    """One dead letter: its envelope (decoded), its delivery's identity and every attempt; None if none."""
    row = conn.execute(
        """SELECT l.*, d.address, d.user_id, d.state, d.template, d.template_version, d.idempotency_key, d.message_id
           FROM dead_letters l JOIN deliveries d ON d.id = l.delivery_id WHERE l.delivery_id=?""",
        (delivery_id,),
    ).fetchone()
    if row is None:
        return None
    item = dict(row)
    item["envelope"] = loads(item["envelope"])
    item["attempts"] = [
        dict(a)
        for a in conn.execute(
            "SELECT number, started, latency_ms, outcome, provider, code, message FROM attempts WHERE delivery_id=? "
            "ORDER BY number",
            (delivery_id,),
        )
    ]
    return item


def purge(
    conn: sqlite3.Connection, *, ids: list[int] | None = None, run_id: str | None = None, before: str | None = None
) -> int:
    """Delete the dead letters matching every filter given (all of them when none is), audited;
    returns how many. The deliveries stay, as dead."""
    sql = "DELETE FROM dead_letters WHERE 1=1"
    params: list[Any] = []
    if ids:
        sql += f" AND delivery_id IN ({','.join('?' * len(ids))})"
        params.extend(ids)
    if run_id:
        sql += " AND run_id=?"
        params.append(run_id)
    if before:
        sql += " AND created < ?"
        params.append(before)
    with transaction(conn):
        n = int(conn.execute(sql, params).rowcount)
        record_event(conn, "dlq_purge", run_id, {"count": n})
    return n
