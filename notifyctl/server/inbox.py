"""The in-app inbox for the app's own backend (API key): list newest first, mark read.

`GET /v1/users/{user_id}/inbox?unread=1&limit=20&cursor=ID` pages backwards by message id:
`next_cursor` is the last id of the page, passed back as `cursor` for the next (older) page.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from aiohttp import web

from notifyctl.server.responses import json_error
from notifyctl.server.state import state_of
from notifyctl.store import directory
from notifyctl.store.db import iso, loads, transaction

routes = web.RouteTableDef()

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"'{name}' must be an integer") from exc
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"'{name}' must be between {low} and {high}")
    return value


def _message(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "data": loads(row["data"]) or {},
        "created": row["created"],
        "read_at": row["read_at"],
        "delivery_id": row["delivery_id"],
    }


def list_inbox(
    conn: sqlite3.Connection, user_id: str, *, unread_only: bool, limit: int, cursor: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    sql = "SELECT id, delivery_id, title, body, data, created, read_at FROM inbox WHERE user_id=?"
    params: list[Any] = [user_id]
    if unread_only:
        sql += " AND read_at IS NULL"
    if cursor is not None:
        sql += " AND id<?"
        params.append(cursor)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit + 1]).fetchall()
    messages = [_message(r) for r in rows[:limit]]
    return messages, (messages[-1]["id"] if len(rows) > limit else None)


def unread_count(conn: sqlite3.Connection, user_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM inbox WHERE user_id=? AND read_at IS NULL", (user_id,)).fetchone()[0])


def mark_read(conn: sqlite3.Connection, user_id: str, message_id: int) -> str | None:
    """The message's read time (the first one: marking twice changes nothing); None if not theirs."""
    with transaction(conn):
        conn.execute(
            "UPDATE inbox SET read_at=COALESCE(read_at, ?) WHERE id=? AND user_id=?", (iso(), message_id, user_id)
        )
        row = conn.execute("SELECT read_at FROM inbox WHERE id=? AND user_id=?", (message_id, user_id)).fetchone()
    return None if row is None else str(row["read_at"])


@routes.get("/v1/users/{user_id}/inbox")
async def get_inbox(request: web.Request) -> web.Response:
    conn = state_of(request).ctx.conn
    user_id = request.match_info["user_id"]
    try:
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        cursor = _int_param(request, "cursor", 0, 1, 2**62) or None
    except web.HTTPBadRequest as exc:
        return json_error(400, exc.text)
    unread_only = request.query.get("unread", "").lower() in ("1", "true", "yes")
    if directory.get_user(conn, user_id) is None:
        return json_error(404, "unknown user")
    messages, next_cursor = list_inbox(conn, user_id, unread_only=unread_only, limit=limit, cursor=cursor)
    return web.json_response(
        {"messages": messages, "next_cursor": next_cursor, "unread_count": unread_count(conn, user_id)}
    )


@routes.post("/v1/users/{user_id}/inbox/{message_id}/read")
async def post_read(request: web.Request) -> web.Response:
    conn = state_of(request).ctx.conn
    try:
        message_id = int(request.match_info["message_id"])
    except ValueError:
        return json_error(404, "unknown message")
    read_at = mark_read(conn, request.match_info["user_id"], message_id)
    if read_at is None:
        return json_error(404, "unknown message")
    return web.json_response({"id": message_id, "read_at": read_at})
