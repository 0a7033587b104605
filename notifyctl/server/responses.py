"""JSON error answers and the middlewares that guarantee them (every 4xx/5xx is JSON)."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

log = logging.getLogger("notifyctl.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MESSAGES = {
    400: "bad request",
    401: "missing or invalid API key",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
    415: "unsupported media type",
    422: "unprocessable request",
    503: "service unavailable",
}


def json_error(status: int, message: str | None = None, **extra: Any) -> web.Response:
    payload: dict[str, Any] = {"error": {"status": status, "message": message or _MESSAGES.get(status, "error")}}
    payload["error"].update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="notifyctl"'} if status == 401 else None
    return web.json_response(payload, status=status, headers=headers)


def json_middleware(timeout_s: float, max_body_bytes: int) -> Middleware:
    """Router errors (404, 405, 413 from the body limit) as JSON; a per-request time limit; a
    handler bug answers 500 without its message (which may carry personal data)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            async with asyncio.timeout(timeout_s):
                return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 413:
                return json_error(413, f"request body too large (limit {max_body_bytes} bytes)")
            return json_error(exc.status, _MESSAGES.get(exc.status, exc.reason))
        except TimeoutError:
            return json_error(503, "request timed out")
        except Exception as exc:
            # Where it failed, not the message: messages can quote addresses or tokens.
            frames = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)]
            log.error(
                "unhandled error",
                extra={"error": type(exc).__name__, "route": route_name(request), "frames": frames[-6:]},
            )
            return json_error(500, "internal error")

    return middleware


def route_name(request: web.Request) -> str:
    """The route's pattern (`/u/{token}`), never the raw path: paths carry tokens and ids."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None) if route is not None else None
    canonical = getattr(resource, "canonical", None) if resource is not None else None
    return str(canonical) if canonical else "(unmatched)"


async def read_json(request: web.Request) -> Any:
    """The body as JSON; raises HTTPBadRequest (as JSON) for anything else."""
    raw = await request.read()  # 413 above the body limit
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"body is not valid JSON: {exc}") from exc


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    # Without "input": the rejected value may be personal data.
    return [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]} for e in exc.errors()]
