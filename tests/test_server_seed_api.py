"""`POST /api/notify`, the seed's body: `{"userId", "event", "channels", "data", "idempotencyKey"}`,
202 Accepted, through the same pipeline as `/v1/notify`: API keys, validation, idempotency (a
repeated key answers with the original ids and sends nothing), policy. `event` names a template or
is mapped to one by `[events]`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.test_server_harness import running
from tests.webhook_sink import WebhookSink
from tests.workspace import Workspace, make_workspace, users_csv

EVENTS = '[events]\n"user.signed_up" = "welcome"\n'


def seed(user: str = "u1", event: str = "user.signed_up", **extra: Any) -> dict[str, Any]:
    return {"userId": user, "event": event, "channels": ["webhook"], "data": {"product_name": "Acme"}, **extra}


def workspace(tmp_path: Path, sink: WebhookSink) -> Workspace:
    ws = make_workspace(tmp_path, extra=EVENTS)
    users = ws.write("users.csv", users_csv(2, webhook_url=sink.url()))
    assert ws.cli("users", "import", str(users)).exit_code == 0
    return ws


async def test_the_seed_body_is_accepted_mapped_and_deduplicated(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    ws = workspace(tmp_path, webhook_sink)
    async with running(ws) as srv:
        status, first = await srv.api("POST", "/api/notify", json=seed(idempotencyKey="signup-u1"))
        assert status == 202, first
        assert first["duplicate"] is False and [d["channel"] for d in first["deliveries"]] == ["webhook"]
        await asyncio.to_thread(webhook_sink.wait_for, 1)
        status, again = await srv.api("POST", "/api/notify", json=seed(idempotencyKey="signup-u1"))
        assert status == 200 and again["duplicate"] is True
        assert again["delivery_ids"] == first["delivery_ids"]
        # The same key through /v1/notify is the same request: the original ids again.
        v1 = {"user_id": "u1", "template": "welcome", "channels": ["webhook"], "idempotency_key": "signup-u1"}
        status, v1_again = await srv.api("POST", "/v1/notify", json=v1 | {"data": {"product_name": "Acme"}})
        assert status == 200 and v1_again["delivery_ids"] == first["delivery_ids"]
        # An event that is a template's own name needs no mapping.
        status, direct = await srv.api("POST", "/api/notify", json=seed(event="welcome"))
        assert status == 202, direct
        await asyncio.to_thread(webhook_sink.wait_for, 2)
        await asyncio.sleep(0.2)  # room for a wrong third request to show up
    assert len(webhook_sink.requests) == 2 and all(r.verified for r in webhook_sink.requests)
    with ws.db() as conn:
        rows = conn.execute("SELECT template, state FROM deliveries ORDER BY id").fetchall()
    assert [(r["template"], r["state"]) for r in rows] == [("welcome", "sent"), ("welcome", "sent")]


async def test_the_seed_body_is_validated_authenticated_and_policed(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    ws = workspace(tmp_path, webhook_sink)
    off = ws.cli("prefs", "set", "u2", "--channel", "webhook", "--category", "marketing", "--off")
    assert off.exit_code == 0, off.output
    async with running(ws) as srv:
        status, body = await srv.api("POST", "/api/notify", json=seed(), key="not-a-key")
        assert status == 401, body
        snake = {"user_id": "u1", "template": "welcome"}
        status, body = await srv.api("POST", "/api/notify", json=snake)
        assert status == 422
        assert {d["field"] for d in body["error"]["details"]} >= {"userId", "event", "user_id", "template"}
        status, body = await srv.api("POST", "/api/notify", json=seed(event="user.deleted"))
        assert status == 404 and "unknown event 'user.deleted'" in body["error"]["message"]
        status, body = await srv.api("POST", "/api/notify", json=seed(user="nobody"))
        assert status == 404 and "unknown user" in body["error"]["message"]
        status, body = await srv.api("POST", "/api/notify", json=seed(channels=["fax"]))
        assert status == 422, body
        status, body = await srv.api("POST", "/api/notify", json=seed(user="u2"))  # opted out of marketing
        assert status == 202, body
        delivery = body["deliveries"][0]
    with ws.db() as conn:
        state, reason = conn.execute("SELECT state, reason FROM deliveries WHERE id=?", (delivery["id"],)).fetchone()
    assert (state, reason) == ("skipped", "preference_off")
    assert webhook_sink.requests == []
