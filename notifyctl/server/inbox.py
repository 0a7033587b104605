"""The in-app inbox for the app's own backend (API key): list newest first, mark read.

`GET /v1/users/{user_id}/inbox?unread=1&limit=20&cursor=ID` pages backwards by message id:
`next_cursor` is the last id of the page, passed back as `cursor` for the next (older) page.
"""

from __future__ import annotations

from aiohttp import web

from notifyctl.server.responses import json_error
from notifyctl.server.state import state_of
from notifyctl.store import directory
from notifyctl.store.inbox import list_inbox, mark_read, unread_count

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
