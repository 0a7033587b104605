"""A provider that quotes a credential in its refusal: the credential is stored nowhere. On every path
(the Redis workers record their outcomes through the coordinator, the API's engine through its own)."""

from __future__ import annotations

import sqlite3

from tests.contract.conftest import Setup
from tests.contract.world import UNSUBSCRIBE_SECRET
from tests.fakes.twilio import twilio_error


def test_a_refusal_quoting_credentials_is_recorded_without_them(contract: Setup) -> None:
    n = 4
    world, path = contract(n)
    token = world.twilio.auth_token
    echo = f"Authentication with token {token} (and {UNSUBSCRIBE_SECRET}) is not allowed for this number"
    world.twilio.fail_next(n, twilio_error(400, 21612, echo))
    summary = path.run("all.toml")
    assert summary.code == 1, summary.err[-3000:]  # the SMS are dead letters
    sms = world.rows("sms")
    assert {r["state"] for r in sms.values()} == {"dead"} and len(sms) == n
    with world.db() as conn:
        messages = [r[0] for r in conn.execute("SELECT error_message FROM deliveries WHERE channel='sms'")]
    assert all("Authentication with token ***" in m for m in messages), messages
    conn = sqlite3.connect(world.ws.db_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    stored = world.ws.db_path.read_bytes()
    assert token.encode() not in stored
    assert UNSUBSCRIBE_SECRET.encode() not in stored
    assert token not in "".join(world.server_log)
