"""API key authentication for the `/v1/` and `/api/` routes: `Authorization: Bearer <key>`."""

from __future__ import annotations

from aiohttp import web

from notifyctl.server.responses import Handler, json_error
from notifyctl.server.state import state_of
from notifyctl.store.keys import verify_key

API_PREFIXES = ("/v1/", "/api/")
API_KEY_NAME: web.RequestKey[str] = web.RequestKey("api_key_name", str)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@web.middleware
async def api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIXES):
        return await handler(request)
    token = bearer_token(request)
    name = verify_key(state_of(request).ctx.conn, token) if token else None
    if name is None:
        return json_error(401)
    request[API_KEY_NAME] = name
    return await handler(request)


def api_key_name(request: web.Request) -> str | None:
    return request.get(API_KEY_NAME)
