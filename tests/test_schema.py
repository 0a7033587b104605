"""Schema migrations: 0004 replaces the index over every provider message id by per-channel ones."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from notifyctl.store.db import connect, iso, run_migrations
from notifyctl.store.schema import MIGRATIONS

# The receipts' lookups, as notifyctl/server/ses_hooks.py and twilio_hooks.py make them.
SES_LOOKUP = "SELECT id, receipt_status FROM deliveries WHERE provider_message_id=? AND channel='email'"
TWILIO_LOOKUP = "SELECT id, address, receipt_status FROM deliveries WHERE provider_message_id=? AND channel='sms'"


def _database_before_0004(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
    for name, sql in MIGRATIONS[:3]:
        for statement in sql.split(";") if isinstance(sql, str) else sql:
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, iso()))
    now = iso()
    conn.execute(
        "INSERT INTO runs (run_id, kind, template, template_version, category, channels, state, created) "
        "VALUES ('r1', 'broadcast', 't', 'v', 'transactional', '[]', 'completed', ?)",
        (now,),
    )
    for delivery_id, channel, provider_id in [(1, "email", "ses-1"), (2, "sms", "SM1"), (3, "webhook", "msg_x")]:
        conn.execute(
            "INSERT INTO deliveries (id, run_id, channel, address, idempotency_key, event_id, template, "
            "template_version, category, state, provider_message_id, message_id, created, updated) "
            "VALUES (?, 'r1', ?, 'a', ?, 'e', 't', 'v', 'transactional', 'sent', ?, ?, ?, ?)",
            (delivery_id, channel, f"k{delivery_id}", provider_id, f"m{delivery_id}", now, now),
        )
    return conn


def _plan(conn: sqlite3.Connection, query: str) -> str:
    return " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + query, ("x",)))


def test_receipt_lookups_use_the_per_channel_indexes_after_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "notifyctl.db"
    old = _database_before_0004(path)
    assert "deliveries_provider_msg" in _plan(old, SES_LOOKUP)
    old.close()

    conn = connect(path)  # migrates
    assert run_migrations(conn) == []  # already applied by connect
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "deliveries_provider_msg" not in indexes
    assert "USING INDEX deliveries_email_msg" in _plan(conn, SES_LOOKUP)
    assert "USING INDEX deliveries_sms_msg" in _plan(conn, TWILIO_LOOKUP)
    # The rows written before the migration are found through the new indexes.
    assert conn.execute(SES_LOOKUP, ("ses-1",)).fetchone()["id"] == 1
    assert conn.execute(TWILIO_LOOKUP, ("SM1",)).fetchone()["id"] == 2
    assert conn.execute(SES_LOOKUP, ("msg_x",)).fetchone() is None  # a webhook id is no email receipt
    conn.close()
