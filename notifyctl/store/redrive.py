"""Re-driving dead letters and in-doubt deliveries: choosing them, and copying them into a new run."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from notifyctl.states import DeliveryState
from notifyctl.store.db import record_event, transaction
from notifyctl.store.outbox import get_delivery


def candidates(
    conn: sqlite3.Connection, *, ids: list[int] | None = None, run_id: str | None = None, in_doubt: bool = False
) -> list[sqlite3.Row]:
    """Dead letters not redriven yet (or with `in_doubt`, deliveries held in doubt): the given ids,
    else those of a run, else all; rows (id, idempotency_key, created) by id."""
    if in_doubt:
        sql = "SELECT id, idempotency_key, created FROM deliveries WHERE state='in_doubt'"
    else:
        sql = """SELECT d.id, d.idempotency_key, d.created FROM dead_letters l JOIN deliveries d ON d.id=l.delivery_id
                 WHERE l.redriven_at IS NULL"""
    params: list[Any] = []
    alias = "" if in_doubt else "d."
    if ids:
        sql += f" AND {alias}id IN ({','.join('?' * len(ids))})"
        params.extend(ids)
    elif run_id:
        sql += f" AND {alias}run_id=?"
        params.append(run_id)
    return list(conn.execute(sql + f" ORDER BY {alias}id", params))


def channels_of(conn: sqlite3.Connection, delivery_ids: list[int]) -> list[str]:
    """The channels of these deliveries, sorted."""
    return sorted(
        {
            r[0]
            for r in conn.execute(
                f"SELECT DISTINCT channel FROM deliveries WHERE id IN ({','.join('?' * len(delivery_ids))})",
                delivery_ids,
            )
        }
    )


def copy_into_run(
    conn: sqlite3.Connection, run_id: str, delivery_ids: list[int], template_version: Callable[[str], str], now: str
) -> None:
    """In one transaction: a pending copy of each delivery in run `run_id`, keeping its identity
    (idempotency key, message id) and carrying its original run's shared data, rendered with the
    template's current version (`template_version(name)`); the idempotency key points to the copy,
    the dead letter is marked redriven, and the run is planned. Audited."""
    with transaction(conn):
        next_id = int(conn.execute("SELECT COALESCE(max(id), 0) FROM deliveries").fetchone()[0]) + 1
        for old_id in delivery_ids:
            old = get_delivery(conn, old_id)
            assert old is not None
            conn.execute(
                """INSERT INTO deliveries (id, run_id, line, user_id, channel, address, idempotency_key, event_id,
                     template, template_version, category, locale, state, message_id, redrive_of, data,
                     created, updated)
                   SELECT ?, ?, d.line, d.user_id, d.channel, d.address, d.idempotency_key, d.event_id, d.template, ?,
                     d.category, d.locale, 'pending', d.message_id, d.id, json_patch(r.data, d.data), ?, ?
                   FROM deliveries d JOIN runs r ON r.run_id = d.run_id WHERE d.id=?""",
                (next_id, run_id, template_version(old["template"]), now, now, old_id),
            )
            conn.execute("UPDATE idempotency SET delivery_id=? WHERE key=?", (next_id, old["idempotency_key"]))
            conn.execute(
                "UPDATE dead_letters SET redriven_at=?, redrive_count=redrive_count+1 WHERE delivery_id=?",
                (now, old_id),
            )
            if old["state"] == DeliveryState.in_doubt:
                conn.execute("UPDATE deliveries SET reason='redriven', updated=? WHERE id=?", (now, old_id))
            next_id += 1
        conn.execute("UPDATE runs SET planned=1 WHERE run_id=?", (run_id,))
        record_event(conn, "redrive", run_id, {"deliveries": delivery_ids[:1000], "count": len(delivery_ids)})
