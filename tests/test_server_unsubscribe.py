"""RFC 8058 one-click unsubscribe from a plain HTTP client."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from notifyctl.security.unsubscribe import make_token
from tests.test_server_harness import Running, eventually, running, workspace_with_users
from tests.workspace import Workspace

SECRET = "test-secret"  # make_workspace's unsubscribe_secret
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def preference(ws: Workspace, user_id: str, channel: str, category: str) -> int | None:
    with ws.db() as conn:
        row = conn.execute(
            "SELECT enabled FROM preferences WHERE user_id=? AND channel=? AND category=?", (user_id, channel, category)
        ).fetchone()
    return None if row is None else int(row[0])


def audit_count(ws: Workspace, kind: str) -> int:
    with ws.db() as conn:
        return int(conn.execute("SELECT count(*) FROM audit_events WHERE kind=?", (kind,)).fetchone()[0])


async def one_click(srv: Running, token: str, data: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    # A fresh client: no cookie jar, no redirects followed, exactly what a mail client does.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        resp = await client.post(
            f"{srv.url}/u/{token}", data=data if data is not None else ONE_CLICK, allow_redirects=False
        )
        await resp.read()
        return resp


async def test_post_unsubscribes_idempotently_and_get_does_not(tmp_path: Path) -> None:
    ws = workspace_with_users(tmp_path)
    token = make_token(SECRET, "u1", "email", "marketing")
    async with running(ws) as srv:
        async with srv.http.get(f"{srv.url}/u/{token}") as resp:
            page = await resp.text()
            assert resp.status == 200
            assert '<form method="post">' in page and 'name="List-Unsubscribe" value="One-Click"' in page
        assert preference(ws, "u1", "email", "marketing") is None  # GET alone changed nothing
        for _ in range(2):
            resp = await one_click(srv, token)
            assert resp.status == 200
            assert "Location" not in resp.headers and "Set-Cookie" not in resp.headers
            assert resp.headers["Cache-Control"] == "no-store"
    assert preference(ws, "u1", "email", "marketing") == 0
    assert preference(ws, "u1", "email", "transactional") is None  # only the token's category
    assert audit_count(ws, "preference_set") == 1


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: make_token("another-secret", "u1", "email", "marketing"), id="other-secret"),
        pytest.param(
            lambda t: make_token(SECRET, "u2", "email", "marketing").split(".")[0] + "." + t.split(".")[1],
            id="payload-swapped",
        ),
        pytest.param(lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), id="mac-altered"),
        pytest.param(lambda t: t.split(".")[0], id="mac-missing"),
        pytest.param(lambda t: "garbage", id="garbage"),
    ],
)
async def test_forged_or_altered_tokens_are_refused(tmp_path: Path, mangle: Callable[[str], str]) -> None:
    ws = workspace_with_users(tmp_path)
    token = mangle(make_token(SECRET, "u1", "email", "marketing"))
    async with running(ws) as srv:
        async with srv.http.get(f"{srv.url}/u/{token}") as resp:
            assert resp.status == 404
        resp = await one_click(srv, token)
        assert resp.status == 404
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM preferences").fetchone()[0] == 0


async def test_post_without_the_one_click_field_is_refused(tmp_path: Path) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv:
        resp = await one_click(srv, make_token(SECRET, "u1", "email", "marketing"), data={"x": "y"})
    assert resp.status == 400
    assert preference(ws, "u1", "email", "marketing") is None


@pytest.mark.parametrize(
    "who", [pytest.param("Ann@Example.com", id="address"), pytest.param("email:ann@example.com", id="identity")]
)
async def test_inline_contacts_are_suppressed(tmp_path: Path, who: str) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv:
        resp = await one_click(srv, make_token(SECRET, who, "email", "marketing"))
        assert resp.status == 200
        resp = await one_click(srv, make_token(SECRET, who, "email", "marketing"))
        assert resp.status == 200
    with ws.db() as conn:
        rows = conn.execute("SELECT address, reason, source FROM suppressions").fetchall()
    assert [tuple(r) for r in rows] == [("ann@example.com", "unsubscribe", "one-click")]
    assert audit_count(ws, "suppression_added") == 1


async def test_the_link_in_a_sent_marketing_email_works(tmp_path: Path) -> None:
    """End to end: the List-Unsubscribe URL of an email the pipeline wrote, POSTed as RFC 8058 says."""
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv:
        status, _ = await srv.api(
            "POST",
            "/v1/notify",
            json={"user_id": "u2", "template": "welcome", "channels": ["email"], "data": {"product_name": "A"}},
        )
        assert status == 202
        await eventually(lambda: any((tmp_path / "outbox").glob("**/*.eml")))
        [eml] = list((tmp_path / "outbox").glob("**/*.eml"))
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = str(message["List-Unsubscribe"]).strip("<>")
        token = url.rsplit("/u/", 1)[1]
        resp = await one_click(srv, token)
        assert resp.status == 200
    assert preference(ws, "u2", "email", "marketing") == 0
