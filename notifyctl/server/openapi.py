"""`GET /openapi.json`: an OpenAPI 3.1 description of every route of `notifyctl serve`.

Request bodies are described by the same pydantic models that validate them; answers by the
schemas below. tests/test_server_openapi.py checks real answers of the running server against this
document with an OpenAPI schema validator, route by route, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from notifyctl import __version__
from notifyctl.server.api import NotifyRequest, SeedNotifyRequest
from notifyctl.server.devices import DeviceRequest

routes = web.RouteTableDef()

JSON = "application/json"
_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _object(properties: dict[str, Any], required: list[str] | None = None, *, closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required or list(properties)}
    if closed:
        schema["additionalProperties"] = False
    return schema


_STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_NULLABLE_STR = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "status": _INT,
                    "message": _STR,
                    "details": {
                        "type": "array",
                        "items": _object({"field": _STR, "message": _STR}),
                    },
                },
                ["status", "message"],
            )
        }
    ),
    "Delivery": _object(
        {
            "id": _INT,
            "channel": _STR,
            "state": _STR,
            "reason": _NULLABLE_STR,
            "duplicate_of": {"type": ["integer", "null"]},
        }
    ),
    "Accepted": _object(
        {
            "run_id": _STR,
            "delivery_ids": {"type": "array", "items": _INT},
            "deliveries": {"type": "array", "items": _ref("Delivery")},
            "duplicate": _BOOL,
        }
    ),
    "InboxMessage": _object({"id": _INT}, closed=False),
    "Inbox": _object(
        {
            "messages": {"type": "array", "items": _ref("InboxMessage")},
            "next_cursor": {"type": ["integer", "null"]},
            "unread_count": _INT,
        }
    ),
    "Read": _object({"id": _INT, "read_at": _STR}),
    "Device": _object(
        {"user_id": _STR, "platform": _NULLABLE_STR, "service": {"enum": ["fcm", "apns"]}, "created": _BOOL}
    ),
    "Health": _object({"status": {"enum": ["ok", "degraded"]}, "engine": _BOOL, "run_id": _NULLABLE_STR}),
    "Unsubscribed": _object({"unsubscribed": {"const": True}, "channel": _STR, "category": _STR}),
    "SnsResult": {"type": "object"},
}

_MODELS: dict[str, type[BaseModel]] = {
    "NotifyRequest": NotifyRequest,
    "SeedNotifyRequest": SeedNotifyRequest,
    "DeviceRequest": DeviceRequest,
}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json("Error", "an error, as JSON") for status in statuses}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(name)}}}


_API_ERRORS = (400, 401, 404, 413, 415, 422, 503)
_BEARER: list[dict[str, list[str]]] = [{"apiKey": []}]
_USER = {"name": "user_id", "in": "path", "required": True, "schema": _STR}
_TOKEN = {"name": "token", "in": "path", "required": True, "schema": _STR}
_HTML = {"text/html": {"schema": _STR}}
_TWIML = {"text/xml": {"schema": _STR}}

_NOTIFY_ANSWERS = {
    "202": _json("Accepted", "accepted: the deliveries are in the outbox, sent in the background"),
    "200": _json("Accepted", "a repeated idempotency key: the original deliveries, nothing new written"),
    **_errors(*_API_ERRORS),
}

PATHS: dict[str, Any] = {
    "/v1/notify": {
        "post": {
            "summary": "Send a notification (a template to a user)",
            "security": _BEARER,
            "requestBody": _body("NotifyRequest"),
            "responses": _NOTIFY_ANSWERS,
        }
    },
    "/api/notify": {
        "post": {
            "summary": "Send a notification, the seed's body: `event` names a template or is mapped by [events]",
            "security": _BEARER,
            "requestBody": _body("SeedNotifyRequest"),
            "responses": _NOTIFY_ANSWERS,
        }
    },
    "/v1/users/{user_id}/inbox": {
        "get": {
            "summary": "A user's in-app messages, newest first",
            "security": _BEARER,
            "parameters": [
                _USER,
                {"name": "unread", "in": "query", "schema": _STR},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                {"name": "cursor", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            ],
            "responses": {"200": _json("Inbox", "one page of messages"), **_errors(400, 401, 404)},
        }
    },
    "/v1/users/{user_id}/inbox/{message_id}/read": {
        "post": {
            "summary": "Mark an in-app message read",
            "security": _BEARER,
            "parameters": [_USER, {"name": "message_id", "in": "path", "required": True, "schema": _INT}],
            "responses": {"200": _json("Read", "marked read"), **_errors(401, 404)},
        }
    },
    "/v1/users/{user_id}/devices": {
        "post": {
            "summary": "Register a push token",
            "security": _BEARER,
            "parameters": [_USER],
            "requestBody": _body("DeviceRequest"),
            "responses": {
                "201": _json("Device", "registered"),
                "200": _json("Device", "already registered (seen again)"),
                **_errors(400, 401, 404, 415, 422),
            },
        }
    },
    "/v1/users/{user_id}/devices/{token}": {
        "delete": {
            "summary": "Remove a push token",
            "security": _BEARER,
            "parameters": [_USER, _TOKEN],
            "responses": {"204": {"description": "removed"}, **_errors(401, 404)},
        }
    },
    "/hooks/twilio/inbound": {
        "post": {
            "summary": "Twilio's incoming SMS (STOP, START, HELP), signed by Twilio",
            "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "TwiML", "content": _TWIML}, **_errors(400, 403, 503)},
        }
    },
    "/hooks/twilio/status": {
        "post": {
            "summary": "Twilio's delivery receipts, signed by Twilio",
            "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "TwiML", "content": _TWIML}, **_errors(400, 403, 503)},
        }
    },
    "/hooks/ses": {
        "post": {
            "summary": "SES bounces, complaints and deliveries through SNS (signed SNS messages)",
            "requestBody": {"content": {"text/plain": {"schema": _STR}, JSON: {"schema": {"type": "object"}}}},
            "responses": {"200": _json("SnsResult", "applied"), **_errors(400, 403, 422, 503)},
        }
    },
    "/u/{token}": {
        "get": {
            "summary": "The unsubscribe confirmation page",
            "parameters": [_TOKEN],
            "responses": {
                "200": {"description": "the page", "content": _HTML},
                "404": {"description": "an invalid link", "content": _HTML},
            },
        },
        "post": {
            "summary": "RFC 8058 one-click unsubscribe (form field List-Unsubscribe=One-Click)",
            "parameters": [_TOKEN],
            "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {
                    "description": "unsubscribed (JSON when asked for with Accept: application/json)",
                    "content": {JSON: {"schema": _ref("Unsubscribed")}, **_HTML},
                },
                "400": {"description": "the form field is missing", "content": _HTML},
                "404": {"description": "an invalid link", "content": _HTML},
            },
        },
    },
    "/healthz": {
        "get": {
            "summary": "Health: the database answers and the delivery engine runs",
            "responses": {"200": _json("Health", "healthy"), "503": _json("Health", "the engine is not running")},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text exposition format)",
            "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": _STR}}}},
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}},
        }
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `serve` answers."""
    schemas = dict(SCHEMAS)
    for name, model in _MODELS.items():
        schema = model.model_json_schema(by_alias=True, ref_template=_REF, mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notifyctl serve",
            "version": __version__,
            "description": "Notifications through one pipeline: policy, idempotency, retries and audit. "
            "Every 4xx/5xx answer is JSON (`Error`), except the unsubscribe pages.",
        },
        "paths": PATHS,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "notifyctl keys create"}},
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
