"""`notifyctl serve` under pressure and given bad requests: the listen backlog, refusing new work
while the backlog of accepted deliveries is full, a client that leaves mid-body, and idempotency
keys repeated many times."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from notifyctl.app.context import Context
from notifyctl.server.app import serve
from notifyctl.server.config import ServerSettings
from notifyctl.settings import load_settings
from tests.test_server_api import webhook_workspace, welcome
from tests.test_server_harness import eventually, running, workspace_with_users
from tests.webhook_sink import WebhookSink, stall


def listen_backlog(port: int) -> int:
    """The accept queue's length a listening socket was given (`ss` shows it as Send-Q)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    [line] = out.splitlines()
    return int(line.split()[2])


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.parametrize(
    ("server", "expected"), [pytest.param({}, 1024, id="default"), pytest.param({"backlog": 300}, 300, id="set")]
)
async def test_serve_listens_with_the_configured_backlog(tmp_path: Path, server: dict[str, Any], expected: int) -> None:
    options = ServerSettings(**server)
    ws = workspace_with_users(tmp_path, 1)
    ctx = Context.open(load_settings(ws.config, environ={}))
    stop = asyncio.Event()
    urls: list[str] = []
    task = asyncio.create_task(serve(ctx, "127.0.0.1", 0, options=options, on_ready=urls.append, stop=stop))
    try:
        await eventually(lambda: bool(urls) or task.done())
        port = int(urls[0].rsplit(":", 1)[1])
        assert listen_backlog(port) == min(expected, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    finally:
        stop.set()
        await task
        ctx.conn.close()


async def metric(srv: Any, name: str) -> float:
    status, text = await srv.api("GET", "/metrics")
    assert status == 200
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match[1])


async def test_a_full_backlog_refuses_new_notifications_with_503_and_retry_after(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    webhook_sink.on_path("/hook", stall(0.5))  # one connection, half a second a message
    ws = webhook_workspace(tmp_path, webhook_sink, concurrency=1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    async with running(ws, ServerSettings(max_pending=3)) as srv:
        for i in range(3):
            status, body = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key=f"k{i}"))
            assert status == 202, body
        status, refused = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key="k3"))
        assert status == 503, refused
        assert "waiting to be sent" in refused["error"]["message"]
        async with srv.http.post(
            srv.url + "/v1/notify", headers=srv.headers(), json=welcome(idempotency_key="k3")
        ) as resp:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) >= 1
        assert await metric(srv, 'notifyctl_api_refused_total{reason="backpressure"}') == 2
        assert await metric(srv, "notifyctl_api_unsettled") == 3
        status, body = await srv.api("POST", "/v1/notify", json=welcome(idempotency_key="k0"))
        assert status == 200 and body["duplicate"] is True  # a retry of accepted work still gets its ids

        webhook_sink.on_path("/hook", stall(0))
        while (status := (await srv.api("POST", "/v1/notify", json=welcome(idempotency_key="k3")))[0]) == 503:
            assert loop.time() < deadline, "the backlog never drained"
            await asyncio.sleep(0.05)
        assert status == 202
        while await metric(srv, "notifyctl_api_unsettled") != 0:
            assert loop.time() < deadline, "the gauge never came back to 0"
            await asyncio.sleep(0.05)
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 4  # refusals wrote nothing


async def test_a_client_leaving_mid_body_is_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws = workspace_with_users(tmp_path, 1)
    caplog.set_level(logging.INFO, logger="notifyctl.server")
    async with running(ws) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /v1/notify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.key}\r\n"
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"user_id": '.encode()
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await eventually(lambda: any(r.name == "notifyctl.server.access" for r in caplog.records))
    server = [r for r in caplog.records if r.name.startswith("notifyctl.server") or r.name.startswith("aiohttp")]
    assert [r for r in server if r.levelno >= logging.WARNING] == []
    assert any(r.getMessage() == "client disconnected" and r.levelno == logging.INFO for r in server)
    [access] = [r for r in server if r.name == "notifyctl.server.access"]
    assert access.__dict__["fields"]["status"] == 499
    assert access.__dict__["fields"]["route"] == "/v1/notify"


async def test_a_repeated_idempotency_key_writes_nothing_new(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    """The same notification posted again and again (a client retrying) answers with the original
    deliveries each time; before, every repeat added a `skipped: duplicate` row per channel."""
    ws = webhook_workspace(tmp_path, webhook_sink)
    request = {**welcome(idempotency_key="order-7"), "channels": ["webhook", "inapp"]}
    async with running(ws) as srv:
        status, first = await srv.api("POST", "/v1/notify", json=request)
        assert status == 202, first
        for _ in range(20):
            status, again = await srv.api("POST", "/v1/notify", json=request)
            assert status == 200, again
            assert again["duplicate"] is True
            assert again["delivery_ids"] == first["delivery_ids"]
            assert [(d["channel"], d["state"], d["reason"]) for d in again["deliveries"]] == [
                ("webhook", "skipped", "duplicate"),
                ("inapp", "skipped", "duplicate"),
            ]
        status, other = await srv.api("POST", "/v1/notify", json={**request, "channels": ["webhook"], "user_id": "u2"})
        assert status == 202, other
        await asyncio.to_thread(webhook_sink.wait_for, 2)
    with ws.db() as conn:
        rows = conn.execute("SELECT user_id, channel, state FROM deliveries ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("u1", "webhook", "sent"), ("u1", "inapp", "sent"), ("u2", "webhook", "sent")]
    assert len(webhook_sink.requests) == 2
