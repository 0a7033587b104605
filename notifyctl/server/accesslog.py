"""Structured access log: one record per request with an allowlist of fields.

Logged: method, route pattern (never the raw path, which carries unsubscribe tokens, device
tokens and user ids), status, duration and the API key's name. Never logged: query strings,
headers (Authorization, X-Twilio-Signature), bodies. Handlers add masked fields (`mask_address`)
through `note(request, ...)`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from notifyctl.server.auth import api_key_name
from notifyctl.server.responses import Handler, route_name

access_log = logging.getLogger("notifyctl.server.access")

NOTES: web.RequestKey[dict[str, str]] = web.RequestKey("access_notes", dict)
FIELDS = (
    "method",
    "route",
    "status",
    "duration_ms",
    "api_key",
    "run_id",
    "run_ids",
    "address",
    "keyword",
    "message_sid",
    "outcome",
    "error",
    "frames",
    "state",
    "count",
)


def note(request: web.Request, **fields: str) -> None:
    """Add fields to this request's access record (values must already be masked)."""
    request.setdefault(NOTES, {}).update(fields)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        fields: dict[str, Any] = {
            "method": request.method,
            "route": route_name(request),
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        key_name = api_key_name(request)
        if key_name:
            fields["api_key"] = key_name
        fields.update(request.get(NOTES, {}))
        access_log.info("%s %s %s", request.method, fields["route"], status, extra={"fields": fields})


class JsonLineFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message", ...allowlisted fields} per line, for `notifyctl serve`."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        extras = fields if isinstance(fields, dict) else {k: getattr(record, k) for k in FIELDS if hasattr(record, k)}
        payload.update({k: v for k, v in extras.items() if k in FIELDS})
        if record.exc_text:  # a traceback aiohttp_logs.py scrubbed (notifyctl.server logs none)
            payload["exception"] = record.exc_text
        return orjson.dumps(payload, default=str).decode()
