"""Push tokens: `POST /v1/users/{user_id}/devices` registers (with the token's push service, `fcm` by
default or `apns`), `DELETE .../devices/{token}` removes."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from notifyctl.server.responses import json_error, read_json, validation_details
from notifyctl.server.state import state_of
from notifyctl.store import directory

routes = web.RouteTableDef()


class DeviceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    token: str = Field(min_length=1, max_length=4096, pattern=r"^[^\s/]+$")
    platform: Literal["ios", "android", "web"] | None = None
    service: Literal["fcm", "apns"] = "fcm"  # the push service the token belongs to (an iOS app may use FCM)


@routes.post("/v1/users/{user_id}/devices")
async def post_device(request: web.Request) -> web.Response:
    conn = state_of(request).ctx.conn
    user_id = request.match_info["user_id"]
    try:
        body = DeviceRequest.model_validate(await read_json(request))
    except web.HTTPBadRequest as exc:
        return json_error(400, exc.text)
    except ValidationError as exc:
        return json_error(422, "invalid device", details=validation_details(exc))
    if directory.get_user(conn, user_id) is None:
        return json_error(404, "unknown user")
    created = directory.register_device(conn, user_id, body.token, body.platform, source="api", service=body.service)
    return web.json_response(
        {"user_id": user_id, "platform": body.platform, "service": body.service, "created": created},
        status=201 if created else 200,
    )


@routes.delete("/v1/users/{user_id}/devices/{token}")
async def delete_device(request: web.Request) -> web.Response:
    conn = state_of(request).ctx.conn
    user_id, token = request.match_info["user_id"], request.match_info["token"]
    if not directory.has_device(conn, user_id, token):
        return json_error(404, "unknown device")
    directory.remove_device(conn, user_id, token, reason="api")
    return web.Response(status=204)
