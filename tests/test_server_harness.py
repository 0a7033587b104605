"""The `notifyctl serve` app on 127.0.0.1 for tests, and the behaviour every route shares:
JSON errors, API key auth, the body limit, health, and an access log without secrets."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from notifyctl.app.context import Context
from notifyctl.server.app import create_app
from notifyctl.server.config import ServerSettings
from notifyctl.settings import load_settings
from notifyctl.store.keys import create_key
from tests.workspace import Workspace, make_workspace, users_csv

JSON = {"Content-Type": "application/json"}


@dataclass
class Running:
    url: str
    http: aiohttp.ClientSession
    ctx: Context
    app: web.Application
    key: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def api(
        self, method: str, path: str, *, key: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        sent = {**self.headers(key), **(headers or {})}
        async with self.http.request(method, self.url + path, headers=sent, **kwargs) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body


@asynccontextmanager
async def running(ws: Workspace, options: ServerSettings | None = None) -> AsyncIterator[Running]:
    """The app served on 127.0.0.1:<ephemeral>, its delivery engine running, an API key ready."""
    ctx = Context.open(load_settings(ws.config, environ={}))
    key = create_key(ctx.conn, f"test-{time.monotonic_ns()}")
    app = create_app(ctx, options or ServerSettings())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            yield Running(f"http://127.0.0.1:{port}", http, ctx, app, key)
    finally:
        await runner.cleanup()
        ctx.conn.close()


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def workspace_with_users(tmp_path: Path, n: int = 3, **kwargs: Any) -> Workspace:
    ws = make_workspace(tmp_path, **kwargs)
    result = ws.cli("users", "import", str(ws.write("users.csv", users_csv(n))))
    assert result.exit_code == 0, result.stderr
    return ws


# --- tests ----------------------------------------------------------------------------------------


async def test_healthz_reports_the_running_engine(tmp_path: Path) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv, srv.http.get(srv.url + "/healthz") as resp:
        body = await resp.json()
        assert resp.status == 200
        assert body["engine"] is True
        assert body["run_id"].startswith("api_")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    [
        pytest.param("GET", "/nowhere", {}, 404, "not found", id="unknown-route"),
        pytest.param("GET", "/v1/notify", {}, 405, "method not allowed", id="wrong-method"),
        pytest.param(
            "POST", "/v1/notify", {"data": b"{not json", "headers": JSON}, 400, "not valid JSON", id="bad-json"
        ),
        pytest.param("POST", "/v1/notify", {"data": b"{}"}, 415, "application/json", id="no-content-type"),
        pytest.param(
            "POST",
            "/v1/notify",
            {"data": b"user_id=u1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            415,
            "application/json",
            id="form-body",
        ),
        pytest.param(
            "POST",
            "/v1/users/u1/devices",
            {"data": b'{"token": "t"}', "headers": {"Content-Type": "text/plain"}},
            415,
            "application/json",
            id="devices-text-plain",
        ),
        pytest.param("POST", "/v1/notify", {"json": {"user_id": "u1"}}, 422, "invalid", id="missing-fields"),
        pytest.param(
            "POST",
            "/v1/notify",
            {"json": {"user_id": "u1", "template": "welcome", "x": 1}},
            422,
            "invalid",
            id="unknown-field",
        ),
        pytest.param(
            "POST",
            "/v1/notify",
            {"json": {"user_id": "u1", "template": "nope"}},
            404,
            "unknown template",
            id="unknown-template",
        ),
        pytest.param(
            "POST",
            "/v1/notify",
            {"json": {"user_id": "ghost", "template": "welcome", "data": {"product_name": "A"}}},
            404,
            "unknown user",
            id="unknown-user",
        ),
        pytest.param(
            "POST",
            "/v1/notify",
            {"json": {"user_id": "u1", "template": "welcome"}},
            422,
            "product_name",
            id="template-variable-missing",
        ),
        pytest.param(
            "POST",
            "/v1/notify",
            {"json": {"user_id": "u1", "template": "welcome", "channels": ["sms"], "data": {"product_name": "A"}}},
            422,
            "no 'sms' part",
            id="channel-not-in-template",
        ),
        pytest.param(
            "POST",
            "/v1/notify",
            {"data": io.BytesIO(b"{" + b" " * (1 << 20) + b"}"), "headers": JSON},
            413,
            "too large",
            id="body-over-1MiB",
        ),
    ],
)
async def test_errors_are_json(
    tmp_path: Path, method: str, path: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv:
        got_status, body = await srv.api(method, path, **kwargs)
    assert got_status == status
    assert isinstance(body, dict), body
    assert body["error"]["status"] == status
    assert message in body["error"]["message"] or message in str(body["error"].get("details"))


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Bearer nk_not-a-real-key", id="unknown-key"),
        pytest.param("Basic dXNlcjpwYXNz", id="wrong-scheme"),
        pytest.param("Bearer ", id="empty"),
    ],
)
async def test_api_routes_need_a_key(tmp_path: Path, authorization: str | None) -> None:
    ws = workspace_with_users(tmp_path)
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with running(ws) as srv, srv.http.get(srv.url + "/v1/users/u1/inbox", headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["error"]["status"] == 401


async def test_access_log_has_routes_not_secrets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from notifyctl.security.unsubscribe import make_token

    ws = workspace_with_users(tmp_path)
    token = make_token("test-secret", "u1", "email", "marketing")
    caplog.set_level(logging.INFO, logger="notifyctl.server")
    async with running(ws) as srv:
        await srv.api("GET", "/v1/users/u1/inbox")
        await srv.api("GET", "/v1/users/u1/inbox", key="nk_wrong-key")
        async with srv.http.get(f"{srv.url}/u/{token}") as resp:
            assert resp.status == 200
        await srv.api("DELETE", "/v1/users/u1/devices/device-token-secret")
        key = srv.key
    access = [r for r in caplog.records if r.name == "notifyctl.server.access"]
    assert len(access) == 4
    routes = [r.__dict__["fields"]["route"] for r in access]
    assert routes == [
        "/v1/users/{user_id}/inbox",
        "/v1/users/{user_id}/inbox",
        "/u/{token}",
        "/v1/users/{user_id}/devices/{token}",
    ]
    assert [r.__dict__["fields"]["status"] for r in access] == [200, 401, 200, 404]
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (key, "nk_wrong-key", token, "device-token-secret", "Bearer"):
        assert secret not in text


async def test_aiohttp_records_are_scrubbed_while_the_app_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A request aiohttp cannot parse is a warning without its bytes; any other aiohttp record keeps
    its traceback, scrubbed of configured secrets and API keys; the filter goes with the app."""
    ws = workspace_with_users(tmp_path)
    caplog.set_level(logging.DEBUG)
    server_log = logging.getLogger("aiohttp.server")
    async with running(ws) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /healthz HTTP/1.1\r\nAuthorization: Bearer {srv.key}{'A' * 9000}\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.read(100)).startswith(b"HTTP/1.0 400")
        writer.close()
        await eventually(lambda: any("unreadable request" in r.getMessage() for r in caplog.records))
        try:
            raise RuntimeError(f"boom with {srv.key} and test-secret")
        except RuntimeError:
            server_log.exception("Unhandled exception")
    [parse_error] = [r for r in caplog.records if "unreadable request" in r.getMessage()]
    assert parse_error.levelno == logging.WARNING and parse_error.exc_info is None
    [crash] = [r for r in caplog.records if r.getMessage() == "Unhandled exception"]
    assert crash.exc_text is not None and "RuntimeError: boom with *** and ***" in crash.exc_text
    assert srv.key not in caplog.text and "test-secret" not in caplog.text
    caplog.clear()
    server_log.error("after the app: %s", "Bearer nk_abcdefghijklmnopqrstuvwxyz")
    assert "nk_abcdefghijklmnopqrstuvwxyz" in caplog.text  # the filter was taken off at cleanup
