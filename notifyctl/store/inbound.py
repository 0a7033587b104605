"""What comes back in through webhooks: inbound message ids, so that a retried one acts once, and
the delivery receipts providers send about messages already sent."""

from __future__ import annotations

import sqlite3

from notifyctl.store.db import iso

# Each statement names its channel as a literal: only then can SQLite use that channel's partial
# index on provider_message_id (schema migration 0004_receipt_indexes).
_RECEIPT_TARGETS = {
    "email": "SELECT id, address, receipt_status FROM deliveries WHERE provider_message_id=? AND channel='email'",
    "sms": "SELECT id, address, receipt_status FROM deliveries WHERE provider_message_id=? AND channel='sms'",
}


def first_time(conn: sqlite3.Connection, sid: str, kind: str) -> bool:
    """Record an inbound message id; False when it was seen before."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO inbound_messages (sid, kind, received) VALUES (?, ?, ?)", (sid, kind, iso())
    )
    return cur.rowcount == 1


def receipt_targets(conn: sqlite3.Connection, channel: str, provider_message_id: str) -> list[sqlite3.Row]:
    """(id, address, receipt_status) of the deliveries on `channel` ("email" or "sms") that the
    provider knows as `provider_message_id`."""
    rows: list[sqlite3.Row] = conn.execute(_RECEIPT_TARGETS[channel], (provider_message_id,)).fetchall()
    return rows


def set_receipt(conn: sqlite3.Connection, delivery_id: int, receipt: str) -> None:
    """Record a delivery's latest receipt status (the caller decides whether it outranks the current one)."""
    conn.execute("UPDATE deliveries SET receipt_status=?, updated=? WHERE id=?", (receipt, iso(), delivery_id))
