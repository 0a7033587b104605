"""The aiohttp application of `notifyctl serve`, and running it until SIGTERM.

    POST /v1/notify, POST /api/notify (seed)     notification API (API key)       server.api
    GET  /v1/users/{id}/inbox, POST .../read     in-app inbox (API key)           server.inbox
    POST /v1/users/{id}/devices, DELETE .../{t}  push tokens (API key)            server.devices
    POST /hooks/twilio/inbound, /status          Twilio SMS in, receipts          server.twilio_hooks
    POST /hooks/ses                              SES via SNS: bounces, complaints server.ses_hooks
    GET|POST /u/{token}                          RFC 8058 one-click unsubscribe   server.unsubscribe
    GET  /healthz, /metrics                      health, Prometheus text          server.metrics
    GET  /openapi.json                           OpenAPI 3.1 of all of the above  server.openapi

Shutdown order: stop accepting connections, let requests in flight finish (their 202 work is
already in the outbox), then stop the engine so that nothing new is sent; what is left pending
is finished by the next start or `notifyctl resume RUN`.
"""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from notifyctl.app.context import Context
from notifyctl.errors import InputError
from notifyctl.security.redaction import configured_secrets
from notifyctl.server import (
    aiohttp_logs,
    api,
    devices,
    inbox,
    metrics,
    openapi,
    ses_hooks,
    twilio_hooks,
    unsubscribe,
)
from notifyctl.server.accesslog import access_log_middleware
from notifyctl.server.auth import api_key_middleware
from notifyctl.server.config import ServerSettings, server_settings
from notifyctl.server.responses import json_middleware
from notifyctl.server.service import DeliveryService
from notifyctl.server.state import STATE, ServerState


def create_app(ctx: Context, options: ServerSettings | None = None) -> web.Application:
    """The application; the delivery engine starts with it and stops on cleanup."""
    options = options or server_settings(ctx.settings)
    app = web.Application(
        client_max_size=options.max_body_bytes,
        middlewares=[
            access_log_middleware,
            json_middleware(options.request_timeout_s, options.max_body_bytes),
            api_key_middleware,
        ],
    )
    app[STATE] = ServerState(ctx=ctx, options=options, service=DeliveryService(ctx))
    for module in (api, inbox, devices, twilio_hooks, ses_hooks, unsubscribe, metrics, openapi):
        app.router.add_routes(module.routes)
    app.cleanup_ctx.append(_scrubbed_aiohttp_logs)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


async def _scrubbed_aiohttp_logs(app: web.Application) -> AsyncIterator[None]:
    """aiohttp's log records without the client's bytes or a secret, while the app runs."""
    uninstall = aiohttp_logs.install(configured_secrets(app[STATE].ctx.settings))
    try:
        yield
    finally:
        uninstall()


async def _start(app: web.Application) -> None:
    state = app[STATE]
    # Outbound calls (SNS certificates, subscription confirmations): no cookies, no env proxies.
    state.http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
    await state.service.start()


async def _stop(app: web.Application) -> None:
    state = app[STATE]
    await state.service.stop(state.options.shutdown_timeout_s)
    if state.http is not None:
        await state.http.close()


def cannot_listen(host: str, port: int, exc: OSError) -> InputError:
    """The one-line error for an address `serve` cannot listen on, with the fix."""
    fixes = {
        errno.EADDRINUSE: "another process listens there: stop it, or pass --port N",
        errno.EACCES: "ports below 1024 need privileges: pass --port 8080 (or higher)",
        errno.EADDRNOTAVAIL: "no network interface of this machine has that address: pass --host 127.0.0.1 or 0.0.0.0",
    }
    fix = fixes.get(exc.errno or 0, "pass another --host or --port")
    return InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {fix}")


async def serve(
    ctx: Context,
    host: str,
    port: int,
    *,
    options: ServerSettings | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or `stop` is set), then shut down gracefully."""
    options = options or server_settings(ctx.settings)
    app = create_app(ctx, options)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=options.shutdown_timeout_s)
    await runner.setup()
    stop = stop or asyncio.Event()
    try:
        site = web.TCPSite(runner, host, port, backlog=options.backlog)
        try:
            await site.start()
        except OSError as exc:
            raise cannot_listen(host, port, exc) from None
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop waiting for requests in flight
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        if on_ready is not None:
            bound = runner.addresses[0] if runner.addresses else (host, port)
            on_ready(f"http://{bound[0]}:{bound[1]}")
        await stop.wait()
    finally:
        await runner.cleanup()
