"""Local stand-ins for email providers, each a real server on 127.0.0.1 in its own thread.

    tests.fakes.postmark  FakePostmark: the Postmark HTTP API (/email, /email/batch), aiohttp
    tests.fakes.smtp      FakeSmtp: an aiosmtpd server that records, refuses and drops
    tests.fakes.moto      MotoSes (moto's ThreadedMotoServer) and FakeSesApi (scripted SESv2 errors)

This module holds what the HTTP fakes share: `AppServer`, which runs an aiohttp application in
its own thread and event loop (so sync tests, async tests and subprocesses can all reach it),
records every request and answers from a script of `Answer`s before its normal behaviour. The
`process_then_*` answers do the normal work first (the message is created and recorded) and then
lose the answer: what an unknown outcome looks like from the client's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

from tests.threaded_app import ThreadedApp

AnswerKind = Literal["respond", "reset", "stall", "process_then_stall", "process_then_reset"]


@dataclass(frozen=True)
class Answer:
    """What a fake does with one request instead of its normal behaviour."""

    kind: AnswerKind = "respond"
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def answer_json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Answer:
    """Answer with `status` and a JSON body."""
    merged = {"Content-Type": "application/json", **(headers or {})}
    return Answer("respond", status=status, body=orjson.dumps(payload), headers=merged)


def answer_reset() -> Answer:
    """Read the request, then reset the TCP connection (RST) without answering."""
    return Answer("reset")


def answer_stall(seconds: float) -> Answer:
    """Read the request and answer nothing for `seconds` (then 200), to provoke client timeouts."""
    return Answer("stall", seconds=seconds)


def process_then_stall(seconds: float) -> Answer:
    """Do the normal work (create and record the message), then hold the answer for `seconds`."""
    return Answer("process_then_stall", seconds=seconds)


def process_then_reset() -> Answer:
    """Do the normal work (create and record the message), then reset the connection instead of answering."""
    return Answer("process_then_reset")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as a fake saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer_port: int | None  # equal ports mean a reused keep-alive connection
    received_monotonic: float
    answer: AnswerKind | Literal["normal"]

    def json(self) -> Any:
        return orjson.loads(self.body)


class AppServer(ThreadedApp):
    """An aiohttp app on 127.0.0.1:<ephemeral> in its own thread; subclasses implement `handle`."""

    thread_name = "fake-http"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._script: deque[Answer] = deque()

    # -- what tests use (any thread) --------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *answers: Answer) -> None:
        """Answer the next requests (any path) with these, in order; then behave normally."""
        with self._lock:
            self._script.extend(answers)

    def fail_next(self, count: int, answer: Answer) -> None:
        """Answer the next `count` requests with `answer`."""
        self.script(*([answer] * count))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    def clear(self) -> None:
        """Forget recorded requests and the script (subclasses also forget their state)."""
        with self._lock:
            self._records.clear()
            self._script.clear()

    # -- requests -----------------------------------------------------------------------------------

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """The fake's normal behaviour."""
        raise NotImplementedError

    async def serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=body,
            peer_port=int(peer[1]) if peer else None,
            received_monotonic=time.monotonic(),
            answer=scripted.kind if scripted else "normal",
        )
        with self._lock:
            self._records.append(record)
        if scripted is None:
            return await self.handle(request, body)
        if scripted.kind == "process_then_stall":
            response = await self.handle(request, body)
            await self._pause(scripted.seconds)
            return response
        if scripted.kind == "process_then_reset":
            await self.handle(request, body)
            return await self._reset(request)
        if scripted.kind == "reset":
            return await self._reset(request)
        if scripted.kind == "stall":
            await self._pause(scripted.seconds)
            return web.Response(status=200)
        return web.Response(status=scripted.status, body=scripted.body, headers=dict(scripted.headers))

    async def _pause(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: close() sends RST, as a crashed peer or middlebox would.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        await self._pause(5.0)
        return web.Response(status=599)
