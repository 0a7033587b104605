"""The in-app inbox and push-token routes, fed by real in-app deliveries."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_server_harness import Running, eventually, running, workspace_with_users
from tests.workspace import Workspace


def inbox_rows(ws: Workspace, user_id: str) -> int:
    with ws.db() as conn:
        return int(conn.execute("SELECT count(*) FROM inbox WHERE user_id=?", (user_id,)).fetchone()[0])


async def deliver_inapp(srv: Running, ws: Workspace, user_id: str, n: int) -> None:
    for i in range(n):
        status, body = await srv.api(
            "POST",
            "/v1/notify",
            json={
                "user_id": user_id,
                "template": "welcome",
                "channels": ["inapp"],
                "data": {"product_name": f"P{i}"},
                "idempotency_key": f"{user_id}-{i}",
            },
        )
        assert status == 202, body
    await eventually(lambda: inbox_rows(ws, user_id) == n)


async def test_inbox_pages_newest_first_with_a_cursor_and_tracks_reads(tmp_path: Path) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv:
        await deliver_inapp(srv, ws, "u1", 5)
        await deliver_inapp(srv, ws, "u2", 1)
        status, page1 = await srv.api("GET", "/v1/users/u1/inbox?limit=2")
        assert status == 200
        ids = [m["id"] for m in page1["messages"]]
        assert ids == sorted(ids, reverse=True) and len(ids) == 2
        assert page1["unread_count"] == 5
        assert page1["messages"][0]["title"] == "Welcome, Name1!"
        status, page2 = await srv.api("GET", f"/v1/users/u1/inbox?limit=2&cursor={page1['next_cursor']}")
        status, page3 = await srv.api("GET", f"/v1/users/u1/inbox?limit=2&cursor={page2['next_cursor']}")
        all_ids = ids + [m["id"] for m in page2["messages"]] + [m["id"] for m in page3["messages"]]
        assert len(all_ids) == 5 and len(set(all_ids)) == 5
        assert page3["next_cursor"] is None

        newest = ids[0]
        status, read = await srv.api("POST", f"/v1/users/u1/inbox/{newest}/read")
        assert status == 200 and read["read_at"]
        status, again = await srv.api("POST", f"/v1/users/u1/inbox/{newest}/read")
        assert again["read_at"] == read["read_at"]  # marking twice keeps the first time

        status, unread = await srv.api("GET", "/v1/users/u1/inbox?unread=1")
        assert [m["id"] for m in unread["messages"]] == all_ids[1:]
        assert unread["unread_count"] == 4
        status, everything = await srv.api("GET", "/v1/users/u1/inbox")
        assert len(everything["messages"]) == 5

        # Another user's message is not this user's to read.
        status, theirs = await srv.api("GET", "/v1/users/u2/inbox")
        other = theirs["messages"][0]["id"]
        status, _ = await srv.api("POST", f"/v1/users/u1/inbox/{other}/read")
        assert status == 404


@pytest.mark.parametrize(
    ("query", "status"),
    [
        pytest.param("limit=0", 400, id="limit-zero"),
        pytest.param("limit=101", 400, id="limit-too-big"),
        pytest.param("limit=abc", 400, id="limit-not-int"),
        pytest.param("cursor=-1", 400, id="negative-cursor"),
        pytest.param("limit=100", 200, id="max-limit"),
    ],
)
async def test_inbox_query_validation(tmp_path: Path, query: str, status: int) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv:
        got, body = await srv.api("GET", f"/v1/users/u1/inbox?{query}")
        assert got == status, body
        got, _ = await srv.api("GET", "/v1/users/ghost/inbox")
        assert got == 404


async def test_devices_register_and_remove(tmp_path: Path) -> None:
    ws = workspace_with_users(tmp_path)
    token = "dGVzdA:APA91b-Example_token-123"  # FCM tokens carry a colon
    async with running(ws) as srv:
        status, body = await srv.api("POST", "/v1/users/u1/devices", json={"token": token, "platform": "android"})
        assert status == 201 and body["created"] is True
        status, body = await srv.api("POST", "/v1/users/u1/devices", json={"token": token, "platform": "android"})
        assert status == 200 and body["created"] is False
        status, _ = await srv.api("POST", "/v1/users/u1/devices", json={"token": "", "platform": "android"})
        assert status == 422
        status, _ = await srv.api("POST", "/v1/users/u1/devices", json={"token": "x", "platform": "symbian"})
        assert status == 422
        status, _ = await srv.api("POST", "/v1/users/ghost/devices", json={"token": "x"})
        assert status == 404
        with ws.db() as conn:
            assert [tuple(r) for r in conn.execute("SELECT user_id, token, platform FROM devices")] == [
                ("u1", token, "android")
            ]
        status, _ = await srv.api("DELETE", f"/v1/users/u2/devices/{token}")
        assert status == 404  # not u2's token
        status, _ = await srv.api("DELETE", f"/v1/users/u1/devices/{token}")
        assert status == 204
        status, _ = await srv.api("DELETE", f"/v1/users/u1/devices/{token}")
        assert status == 404
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 0
        kinds = [r[0] for r in conn.execute("SELECT kind FROM audit_events WHERE kind LIKE 'device%' ORDER BY id")]
    assert kinds == ["device_registered", "device_removed"]
