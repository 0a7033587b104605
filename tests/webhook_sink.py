"""A Standard Webhooks receiver for tests: a real aiohttp server on 127.0.0.1 in its own thread.

It runs its own event loop, so sync tests, async tests and subprocess tests (through `sink.url()`)
can all use it. Every request is verified with the official `standardwebhooks` package and
recorded; answers can be scripted per request (`sink.script(...)`, consumed in order) or per path
(`sink.on_path(...)`, persistent):

    with WebhookSink() as sink:
        sink.script(respond(500), respond(429, {"Retry-After": "7"}))
        sink.on_path("/gone", respond(410))
        ... POST to sink.url("/hook") ...
        assert sink.requests[0].verified

Faults: `respond(status, headers, body)`, `reset()` (TCP RST instead of an answer), `stall(s)`
(no answer for s seconds), `accept_then_stall(s)` (status line and headers sent, the body stalls).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from standardwebhooks import Webhook

from tests.threaded_app import ThreadedApp

SINK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

FaultKind = Literal["respond", "reset", "stall", "accept_then_stall"]


@dataclass(frozen=True)
class Fault:
    """What the sink does with one request."""

    kind: FaultKind
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0


def respond(status: int, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Fault:
    """Answer with `status` (and headers/body)."""
    return Fault("respond", status=status, headers=dict(headers or {}), body=body)


def reset() -> Fault:
    """Read the request, then reset the connection (RST) without answering."""
    return Fault("reset")


def stall(seconds: float) -> Fault:
    """Read the request and send nothing for `seconds`, then answer 200."""
    return Fault("stall", seconds=seconds)


def accept_then_stall(seconds: float) -> Fault:
    """Send `200` and headers at once, then stall the body for `seconds`."""
    return Fault("accept_then_stall", seconds=seconds)


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the sink saw it."""

    method: str
    path: str
    webhook_id: str | None
    body: bytes
    verified: bool  # the official standardwebhooks verifier accepted it with one of the sink's secrets
    verified_by: tuple[int, ...]  # indexes into sink.secrets that verify it
    headers: dict[str, str]
    received_at: float  # time.time()
    received_monotonic: float  # time.monotonic(), for measuring gaps between attempts
    peer_port: int | None  # the client's port: equal ports mean a reused keep-alive connection
    fault: FaultKind


def _verified_by(secrets: Sequence[str], body: bytes, headers: Mapping[str, str]) -> tuple[int, ...]:
    good = []
    for index, secret in enumerate(secrets):
        try:
            Webhook(secret).verify(body, dict(headers), json_parse=False)
        except Exception:  # any failure of the official verifier means "not verified"
            continue
        good.append(index)
    return tuple(good)


class WebhookSink(ThreadedApp):
    """The receiver; use as a context manager (or start()/stop())."""

    thread_name = "webhook-sink"

    def __init__(self, secrets: Sequence[str] = (SINK_SECRET,)) -> None:
        super().__init__()
        self.secrets: list[str] = list(secrets)
        self._lock = threading.Lock()
        self._records: list[ReceivedRequest] = []
        self._script: deque[Fault] = deque()
        self._path_faults: dict[str, Fault] = {}
        self._hook: Callable[[ReceivedRequest, int], None] | None = None

    # -- configuration (any thread) ------------------------------------------------------------

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *faults: Fault) -> None:
        """Answer the next requests (any path) with these, in order; then fall back to path/200."""
        with self._lock:
            self._script.extend(faults)

    def on_path(self, path: str, fault: Fault) -> None:
        """Answer every request to `path` with `fault` (after the script is used up)."""
        with self._lock:
            self._path_faults[path] = fault

    def on_request(self, hook: Callable[[ReceivedRequest, int], None] | None) -> None:
        """Call `hook(request, count)` in the sink's thread for every request once it is recorded and
        before it is answered (`count`: requests so far, this one included)."""
        with self._lock:
            self._hook = hook

    def clear(self) -> None:
        """Forget recorded requests, the script and the per-path faults."""
        with self._lock:
            self._records.clear()
            self._script.clear()
            self._path_faults.clear()

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._records)

    def requests_to(self, path: str) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.path == path]

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived; AssertionError on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = self.requests
            if len(records) >= count:
                return records
            time.sleep(0.01)
        raise AssertionError(f"expected {count} webhook requests, got {len(self.requests)}")

    # -- the handler ------------------------------------------------------------------------------

    def _next_fault(self, path: str) -> Fault:
        with self._lock:
            if self._script:
                return self._script.popleft()
            return self._path_faults.get(path, respond(200))

    async def serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        fault = self._next_fault(request.path)
        verified_by = _verified_by(list(self.secrets), body, headers)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = ReceivedRequest(
            method=request.method,
            path=request.path,
            webhook_id=request.headers.get("webhook-id"),
            body=body,
            verified=bool(verified_by),
            verified_by=verified_by,
            headers=headers,
            received_at=time.time(),
            received_monotonic=time.monotonic(),
            peer_port=int(peer[1]) if peer else None,
            fault=fault.kind,
        )
        with self._lock:
            self._records.append(record)
            hook, count = self._hook, len(self._records)
        if hook is not None:
            hook(record, count)
        if fault.kind == "reset":
            return await self._reset(request)
        if fault.kind == "stall":
            await self._pause(fault.seconds)
            return web.Response(status=200)
        if fault.kind == "accept_then_stall":
            response = web.StreamResponse(status=200)
            response.content_length = 2
            await response.prepare(request)
            await response.write(b"{")
            await self._pause(fault.seconds)
            # The client has usually given up by now; a closed connection is expected here.
            with contextlib.suppress(ConnectionResetError):
                await response.write(b"}")
                await response.write_eof()
            return response
        return web.Response(status=fault.status, headers=dict(fault.headers), body=fault.body)

    async def _pause(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: close() sends RST, which is what a crashed peer or middlebox looks like.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        # Nothing can be written any more; wait until aiohttp notices and cancels this handler.
        await self._pause(5.0)
        return web.Response(status=599)
