"""`POST /v1/notify` and `POST /api/notify` (the seed's body): accept a notification, plan it into
the outbox, answer 202 at once.

`/api/notify` takes the seed's body, `{"userId", "event", "channels", "data", "idempotencyKey"}`:
`event` names the template, or is mapped to one by the configuration's `[events]` table. It is the
same request as `/v1/notify` in other words: same API keys, validation, idempotency, policy,
priorities and answers.

Delivery happens in the background through the same pipeline as every other send, so the
idempotency key, policy, limits, retries and audit all apply. A repeated idempotency key
answers 200 with the original delivery ids, and sends and writes nothing new. While `[server]
max_pending` deliveries are accepted and not yet settled, new ones are refused: 503 with
Retry-After (server/backlog.py).
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from notifyctl.app.checks import category_for, channels_for, check_render
from notifyctl.errors import InputError, TemplateError
from notifyctl.pipeline.planner import PlanItem
from notifyctl.server.accesslog import note
from notifyctl.server.responses import json_error, read_json, validation_details
from notifyctl.server.state import state_of
from notifyctl.store import directory

routes = web.RouteTableDef()

RETRY_AFTER_S = 2  # a refused request's Retry-After: the backlog drains at the providers' rates


class NotifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    user_id: str = Field(min_length=1, max_length=256)
    template: str = Field(min_length=1, max_length=128)
    channels: list[str] | None = Field(default=None, min_length=1, max_length=5)
    data: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    category: str | None = Field(default=None, min_length=1, max_length=64)


class SeedNotifyRequest(BaseModel):
    """The seed's body for `POST /api/notify`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    user_id: str = Field(alias="userId", min_length=1, max_length=256)
    event: str = Field(min_length=1, max_length=128)
    channels: list[str] | None = Field(default=None, min_length=1, max_length=5)
    data: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, alias="idempotencyKey", min_length=1, max_length=256)


@routes.post("/v1/notify")
async def notify(request: web.Request) -> web.Response:
    try:
        body = NotifyRequest.model_validate(await read_json(request))
    except web.HTTPBadRequest as exc:
        return json_error(400, exc.text)
    except ValidationError as exc:
        return json_error(422, "invalid notification request", details=validation_details(exc))
    return await accept(request, body)


@routes.post("/api/notify")
async def seed_notify(request: web.Request) -> web.Response:
    try:
        seed = SeedNotifyRequest.model_validate(await read_json(request))
    except web.HTTPBadRequest as exc:
        return json_error(400, exc.text)
    except ValidationError as exc:
        return json_error(422, "invalid notification request", details=validation_details(exc))
    events = state_of(request).ctx.settings.events
    template = events.get(seed.event, seed.event)
    if template not in state_of(request).ctx.templates.names():
        mapped = f" (mapped by [events] to '{template}')" if seed.event in events else ""
        return json_error(404, f"unknown event '{seed.event}'{mapped}: no template of that name")
    body = NotifyRequest(
        user_id=seed.user_id,
        template=template,
        channels=seed.channels,
        data=seed.data,
        idempotency_key=seed.idempotency_key,
    )
    return await accept(request, body)


async def accept(request: web.Request, body: NotifyRequest) -> web.Response:
    """Plan a valid notification request: 202 with its deliveries (200 with the original ones for a
    repeated idempotency key), or the JSON error that says why not."""
    state = state_of(request)
    ctx = state.ctx
    if body.template not in ctx.templates.names():
        return json_error(404, f"unknown template '{body.template}'")
    try:
        template = ctx.templates.get(body.template)
        channels = channels_for(template, body.channels, ctx.settings)
        category = category_for(ctx.settings, template, body.category, channels)
    except (TemplateError, InputError) as exc:
        return json_error(422, str(exc))
    user = directory.get_user(ctx.conn, body.user_id)
    if user is None:
        return json_error(404, f"unknown user '{body.user_id}'")
    if not state.service.running:
        return json_error(503, "the delivery engine is not running")
    item = PlanItem(
        line=0,
        end_offset=0,
        template=template.name,
        template_version=template.version,
        category=category,
        event_id=body.idempotency_key or f"api:{uuid.uuid4().hex}",
        channels=channels,
        user_id=user.user_id,
        data=body.data,
    )
    if body.idempotency_key:
        # A client retrying a request it already made: its deliveries, and nothing written (planning
        # it again would add a `skipped: duplicate` row per channel each time).
        earlier = state.service.planned_before(item)
        if earlier is not None:
            return answer(request, earlier)
    unsettled = state.service.unsettled()
    if unsettled >= state.options.max_pending:
        state.service.backlog.refused += 1
        note(request, outcome="backpressure", count=str(unsettled))
        refused = json_error(503, f"{unsettled} deliveries are waiting to be sent; try again later")
        refused.headers["Retry-After"] = str(RETRY_AFTER_S)
        return refused
    try:
        check_render(ctx, template, channels, user, body.data)
    except TemplateError as exc:
        return json_error(422, str(exc))
    try:
        result = state.service.submit([item])
    except sqlite3.OperationalError:
        return json_error(503, "the outbox is busy; try again")
    return answer(request, result.deliveries)


def answer(request: web.Request, planned: list[dict[str, Any]]) -> web.Response:
    """202 with the new deliveries; 200 with the original ones when every one is a duplicate."""
    state = state_of(request)
    deliveries = [
        {
            "id": d["duplicate_of"] or d["id"],
            "channel": d["channel"],
            "state": d["state"],
            "reason": d["reason"],
            "duplicate_of": d["duplicate_of"],
        }
        for d in planned
    ]
    duplicate = bool(deliveries) and all(d["duplicate_of"] is not None for d in deliveries)
    note(
        request,
        run_id=state.service.run_id,
        count=str(len(deliveries)),
        outcome="duplicate" if duplicate else "accepted",
    )
    payload = {
        "run_id": state.service.run_id,
        "delivery_ids": [d["id"] for d in deliveries],
        "deliveries": deliveries,
        "duplicate": duplicate,
    }
    return web.json_response(payload, status=200 if duplicate else 202)
