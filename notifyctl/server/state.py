"""What every handler of `notifyctl serve` shares, stored on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from notifyctl.app.context import Context
from notifyctl.server.config import ServerSettings
from notifyctl.server.service import DeliveryService


@dataclass
class ServerState:
    ctx: Context
    options: ServerSettings
    service: DeliveryService
    http: aiohttp.ClientSession | None = None  # outbound: SNS certificates and subscription confirmations
    sns_certificates: dict[str, bytes] = field(default_factory=dict)


STATE: web.AppKey[ServerState] = web.AppKey("notifyctl_state", ServerState)


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]
