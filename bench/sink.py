"""A local sink for the benchmarks, run as its own process (so it does not share our CPU budget).

HTTP (aiohttp): answers every POST with a fixed status and records its arrival time;
`GET /_timestamps` returns those times as JSON (for the token-bucket bench).
SMTP (--smtp, aiosmtpd): accepts every message and drops it.

    python bench/sink.py --port 8099 [--status 204]
    python bench/sink.py --smtp --port 8025
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time

from aiohttp import web


def http_app(status: int) -> web.Application:
    stamps: list[float] = []

    async def accept(request: web.Request) -> web.Response:
        stamps.append(time.time())
        await request.read()
        return web.Response(status=status)

    async def timestamps(_request: web.Request) -> web.Response:
        return web.Response(body=json.dumps(stamps), content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/_timestamps", timestamps)
    app.router.add_route("POST", "/{tail:.*}", accept)
    return app


async def serve_http(port: int, status: int) -> None:
    runner = web.AppRunner(http_app(status), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    await _until_signalled()
    await runner.cleanup()


class _DropHandler:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


async def serve_smtp(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(_DropHandler(), hostname="sink.local"), "127.0.0.1", port, backlog=4096
    )
    await _until_signalled()
    server.close()
    await server.wait_closed()


async def _until_signalled() -> None:
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    # A sink nobody stops (its parent was killed) goes away by itself after an hour.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status", type=int, default=204)
    parser.add_argument("--smtp", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve_smtp(args.port) if args.smtp else serve_http(args.port, args.status))


if __name__ == "__main__":
    main()
