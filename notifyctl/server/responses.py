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

# nginx's "client closed request": the status the access log gives a request whose client left
# before it was answered (the response is never written).
CLIENT_CLOSED_REQUEST = 499

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
    """Router errors (404, 405, 413 from the body limit, 415) as JSON; a per-request time limit; a
    handler bug answers 500 without its message (which may carry personal data); a client that left
    mid-request is not an error (logged at info, 499 in the access log)."""

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
            if exc.status == 415:
                return json_error(415, exc.text)
            return json_error(exc.status, _MESSAGES.get(exc.status, exc.reason))
        except TimeoutError:
            return json_error(503, "request timed out")
        except ConnectionResetError as exc:
            if not client_gone(request):
                return unhandled(request, exc)
            # Mid-body, typically: nobody to answer and nothing wrong here. The access log says 499.
            log.info("client disconnected", extra={"route": route_name(request)})
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        except Exception as exc:
            return unhandled(request, exc)

    return middleware


def client_gone(request: web.Request) -> bool:
    """Whether the request's connection is closed (the client left), not merely some other socket."""
    transport = request.transport
    return transport is None or transport.is_closing()


def unhandled(request: web.Request, exc: Exception) -> web.Response:
    """A handler bug: 500, logged with where it failed (not the message)."""
    # Where it failed, not the message: messages can quote addresses or tokens.
    frames = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)]
    log.error(
        "unhandled error",
        extra={"error": type(exc).__name__, "route": route_name(request), "frames": frames[-6:]},
    )
    return json_error(500, "internal error")


def route_name(request: web.Request) -> str:
    """The route's pattern (`/u/{token}`), never the raw path: paths carry tokens and ids."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None) if route is not None else None
    canonical = getattr(resource, "canonical", None) if resource is not None else None
    return str(canonical) if canonical else "(unmatched)"


def is_json(content_type: str) -> bool:
    """application/json, or a JSON-based type (application/problem+json)."""
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request) -> Any:
    """The body as JSON; raises HTTPUnsupportedMediaType (415) for a body declared as anything else
    and HTTPBadRequest for one that does not parse (both answered as JSON by the middleware)."""
    if not is_json(request.content_type):
        raise web.HTTPUnsupportedMediaType(text=f"send the body as application/json, not {request.content_type}")
    raw = await request.read()  # 413 above the body limit
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"body is not valid JSON: {exc}") from exc


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    # Without "input": the rejected value may be personal data.
    return [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]} for e in exc.errors()]
