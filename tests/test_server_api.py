"""`POST /v1/notify` through the real pipeline: 202 at once, idempotency keys, priority lanes,
and accepted work surviving a shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from notifyctl.store import runs
from tests.test_server_harness import eventually, running
from tests.webhook_sink import WebhookSink, stall
from tests.workspace import Workspace, make_workspace, users_csv


def webhook_workspace(tmp_path: Path, sink: WebhookSink, n: int = 2, **webhook: Any) -> Workspace:
    ws = make_workspace(tmp_path, webhook=webhook or None)
    result = ws.cli("users", "import", str(ws.write("users.csv", users_csv(n, webhook_url=sink.url()))))
    assert result.exit_code == 0, result.stderr
    return ws


def welcome(user_id: str = "u1", **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "template": "welcome",
        "channels": ["webhook"],
        "data": {"product_name": "Acme"},
        **extra,
    }


async def test_repeated_idempotency_key_answers_original_ids_and_sends_once(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    ws = webhook_workspace(tmp_path, webhook_sink)
    async with running(ws) as srv:
        status, first = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key="order-1001"))
        assert status == 202, first
        assert first["duplicate"] is False
        assert [d["state"] for d in first["deliveries"]] == ["pending"]
        await asyncio.to_thread(webhook_sink.wait_for, 1)
        status, again = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key="order-1001"))
        assert status == 200, again
        assert again["duplicate"] is True
        assert again["delivery_ids"] == first["delivery_ids"]
        status, other = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key="order-1002"))
        assert status == 202
        assert other["delivery_ids"] != first["delivery_ids"]
        await asyncio.to_thread(webhook_sink.wait_for, 2)
        await asyncio.sleep(0.2)  # room for a wrong third request to show up
    assert len(webhook_sink.requests) == 2
    assert all(r.verified for r in webhook_sink.requests)
    with ws.db() as conn:
        original = conn.execute("SELECT state FROM deliveries WHERE id=?", (first["delivery_ids"][0],)).fetchone()
        assert original["state"] == "sent"


async def test_202_answers_before_the_send(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    webhook_sink.on_path("/hook", stall(1.0))
    ws = webhook_workspace(tmp_path, webhook_sink)
    async with running(ws) as srv:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, body = await srv.api("POST", "/v1/notify", json=welcome())
        assert status == 202
        assert loop.time() - started < 0.5
        await asyncio.to_thread(webhook_sink.wait_for, 1)
        assert body["deliveries"][0]["channel"] == "webhook"


async def test_transactional_overtakes_a_queued_marketing_backlog(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    """One webhook worker, a slow receiver, 12 marketing messages queued: the order_shipped
    (transactional, high priority) message is sent next, not 13th."""
    webhook_sink.on_path("/hook", stall(0.08))
    ws = webhook_workspace(tmp_path, webhook_sink, concurrency=1)
    async with running(ws) as srv:
        for i in range(12):
            status, _ = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key=f"promo-{i}"))
            assert status == 202
        await asyncio.to_thread(webhook_sink.wait_for, 1)
        status, body = await srv.api(
            "POST",
            "/v1/notify",
            json={
                "user_id": "u1",
                "template": "order_shipped",
                "channels": ["webhook"],
                "data": {"order_id": "A-1", "tracking_url": "https://t.example/A-1", "carrier": "UPS"},
            },
        )
        assert status == 202, body
        await asyncio.to_thread(webhook_sink.wait_for, 4)
    kinds = [orjson.loads(r.body).get("type") for r in webhook_sink.requests]
    position = next(i for i, kind in enumerate(kinds) if kind != "user.welcome")
    assert position <= 2, kinds  # at most the request in flight and one already taken by the worker


async def test_shutdown_keeps_accepted_work_and_the_next_start_finishes_it(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    webhook_sink.on_path("/hook", stall(0.2))
    ws = webhook_workspace(tmp_path, webhook_sink, concurrency=1)
    async with running(ws) as srv:
        for i in range(5):
            status, _ = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key=f"k{i}"))
            assert status == 202
        run_id = srv.ctx.conn.execute("SELECT run_id FROM runs WHERE kind='api'").fetchone()[0]
        await asyncio.to_thread(webhook_sink.wait_for, 1)
    states = ws.states(run_id)
    assert states.get("pending", 0) >= 1, states  # accepted, not sent, not lost
    with ws.db() as conn:
        assert conn.execute("SELECT state FROM runs WHERE run_id=?", (run_id,)).fetchone()[0] == "interrupted"
    webhook_sink.on_path("/hook", stall(0))
    async with running(ws) as srv:
        await eventually(lambda: ws.states(run_id) == {"sent": 5}, timeout_s=10)
        assert runs.get_run(srv.ctx.conn, run_id) is not None
    ids = [r.webhook_id for r in webhook_sink.requests]
    assert len(set(ids)) == 5  # every accepted message arrived; a repeat would share its webhook-id


async def test_a_template_edited_while_serving_is_used_for_new_requests(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    ws = webhook_workspace(tmp_path, webhook_sink)
    part = tmp_path / "templates" / "welcome" / "webhook" / "body.json.j2"
    async with running(ws) as srv:
        status, _ = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key="before"))
        assert status == 202
        await asyncio.to_thread(webhook_sink.wait_for, 1)
        part.write_text(part.read_text().replace('"user.welcome"', '"user.welcome.v2"'))
        status, _ = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key="after"))
        assert status == 202
        await asyncio.to_thread(webhook_sink.wait_for, 2)
    assert [orjson.loads(r.body)["type"] for r in webhook_sink.requests] == ["user.welcome", "user.welcome.v2"]
    assert ws.states() == {"sent": 2}
