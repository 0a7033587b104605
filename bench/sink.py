"""A local sink for the benchmarks, run as its own process (so it does not share our CPU budget).

HTTP (aiohttp): answers every POST with a fixed status and records its arrival time;
`GET /_timestamps` returns those times as JSON (for the token-bucket bench).
With `--throttle-ports N --retry-after S` it also listens on the N ports after `--port`, each an
endpoint of its own, answering the first request each gets with 429 and `Retry-After: S` and the
others with the fixed status (for the backpressure bench); `GET /_timestamps` then returns each
request's time, port and path.
SMTP (--smtp, aiosmtpd): accepts every message and drops it.

    python bench/sink.py --port 8099 [--status 204]
    python bench/sink.py --port 8099 --throttle-ports 50 --retry-after 2
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


def http_app(status: int, throttled_ports: frozenset[int] = frozenset(), retry_after: float = 0.0) -> web.Application:
    stamps: list[object] = []
    throttled_once: set[int] = set()

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        if not throttled_ports:
            stamps.append(time.time())
            return web.Response(status=status)
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        stamps.append([time.time(), port, request.path])
        if port in throttled_ports and port not in throttled_once:
            throttled_once.add(port)
            return web.Response(status=429, headers={"Retry-After": f"{retry_after:g}"})
        return web.Response(status=status)

    async def timestamps(_request: web.Request) -> web.Response:
        return web.Response(body=json.dumps(stamps), content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/_timestamps", timestamps)
    app.router.add_route("POST", "/{tail:.*}", accept)
    return app


async def serve_http(port: int, status: int, throttle_ports: int = 0, retry_after: float = 0.0) -> None:
    throttled = frozenset(range(port + 1, port + 1 + throttle_ports))
    runner = web.AppRunner(http_app(status, throttled, retry_after), access_log=None)
    await runner.setup()
    for each in (port, *sorted(throttled)):
        await web.TCPSite(runner, "127.0.0.1", each, backlog=4096).start()
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
    parser.add_argument("--throttle-ports", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=2.0)
    args = parser.parse_args()
    if args.smtp:
        asyncio.run(serve_smtp(args.port))
    else:
        asyncio.run(serve_http(args.port, args.status, args.throttle_ports, args.retry_after))


if __name__ == "__main__":
    main()
