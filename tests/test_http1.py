"""The webhook provider's lean HTTP/1.1 client (providers/http1.py) against a byte-level server.

The server runs in its own thread and answers each request on a connection with the next scripted
reply (raw bytes, sent in the pieces given, with pauses between them), so that the awkward answers
real servers give — a body after the headers, `Connection: close`, 100 Continue, garbage, a hang-up —
can be produced exactly.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from yarl import URL

from notifyctl.errors import OutcomeUnknown, PermanentError, ProviderError, TransientError
from notifyctl.models import Envelope
from notifyctl.providers.base import ProviderContext
from notifyctl.providers.transports.http1 import MAX_HEAD_BYTES, Http1Pool, NoAnswer, Target
from notifyctl.providers.webhook import WebhookProvider
from tests.unreachable import Blackhole, NotTls, closed_port

OK = b"HTTP/1.1 204 No Content\r\n\r\n"

Reply = list[bytes | float]  # byte pieces to send, and pauses (seconds) between them; [] hangs up
HANG_UP = b""  # in a reply: close the connection there


@dataclass
class Received:
    head: bytes
    body: bytes
    port: int


@dataclass
class RawServer:
    """Reads HTTP/1.1 requests (Content-Length bodies) and answers each with the next scripted reply
    (OK when the script is empty)."""

    replies: deque[Reply] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/hook", user: str = "") -> str:
        return f"http://{user}127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, (_, port) = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn, port), daemon=True).start()

    def _serve(self, conn: socket.socket, port: int) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                with self.lock:
                    self.received.append(Received(head, body, port))
                    reply = self.replies.popleft() if self.replies else [OK]
                if not reply:
                    return  # hang up without answering
                for piece in reply:
                    if isinstance(piece, float):
                        time.sleep(piece)
                    elif piece == HANG_UP:
                        return
                    else:
                        try:
                            conn.sendall(piece)
                        except OSError:
                            return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[RawServer]:
    raw = RawServer()
    yield raw
    raw.close()


def target(url: str) -> Target:
    return Target.of(URL(url), "notifyctl-test")


@pytest.fixture
async def pool() -> Iterator[Http1Pool]:
    http = Http1Pool(limit=4, timeout_s=1.0, allow_hosts=("127.0.0.1",))
    yield http  # type: ignore[misc]
    await http.close()


async def post(pool: Http1Pool, server: RawServer, body: bytes = b"{}") -> tuple[int, str | None]:
    return await pool.post(target(server.url()), None, b"Content-Type: application/json\r\n", body)


async def test_request_bytes_and_keep_alive(pool: Http1Pool, server: RawServer) -> None:
    assert await post(pool, server, b'{"a":1}') == (204, None)
    assert await post(pool, server, b'{"a":2}') == (204, None)
    first, second = server.received
    assert first.head.split(b"\r\n") == [
        b"POST /hook HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}".encode(),
        b"User-Agent: notifyctl-test",
        b"Content-Type: application/json",
        b"Content-Length: 7",
    ]
    assert (first.body, second.body) == (b'{"a":1}', b'{"a":2}')
    assert first.port == second.port and server.connections == 1


async def test_a_body_after_the_headers_is_drained_and_the_connection_reused(
    pool: Http1Pool, server: RawServer
) -> None:
    server.replies.append([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 0.2, b"he", 0.05, b"llo"])
    started = time.monotonic()
    assert await post(pool, server) == (200, None)
    assert time.monotonic() - started < 0.15  # answered at the headers, not after the body
    await asyncio.sleep(0.4)
    assert await post(pool, server) == (204, None)
    assert server.connections == 1


async def test_a_chunked_body_is_drained(pool: Http1Pool, server: RawServer) -> None:
    server.replies.append([b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"])
    assert await post(pool, server) == (202, None)
    assert await post(pool, server) == (204, None)
    assert server.connections == 1


async def test_a_stalled_body_does_not_fail_the_delivery_and_the_connection_is_not_reused(
    pool: Http1Pool, server: RawServer
) -> None:
    server.replies.append([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 3.0])
    assert await post(pool, server) == (200, None)
    assert await post(pool, server) == (204, None)  # on a second connection
    assert server.connections == 2


async def test_connection_close_is_honoured(pool: Http1Pool, server: RawServer) -> None:
    server.replies.append([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"])
    assert await post(pool, server) == (200, None)
    assert await post(pool, server) == (204, None)
    assert server.connections == 2


async def test_informational_answers_are_skipped_and_retry_after_is_read(pool: Http1Pool, server: RawServer) -> None:
    server.replies.append(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            0.05,
            b"HTTP/1.1 429 Too Many\r\nRETRY-AFTER: 7\r\nContent-Length: 0\r\n\r\n",
        ]
    )
    assert await post(pool, server) == (429, "7")
    assert await post(pool, server) == (204, None)  # the Retry-After of one answer is not the next's


async def test_a_hang_up_and_garbage_after_the_request_are_no_answer(pool: Http1Pool, server: RawServer) -> None:
    server.replies.extend([[], [b"SMTP ready\r\n\r\n"]])
    with pytest.raises(NoAnswer, match="connection ended") as hung_up:
        await post(pool, server)
    assert hung_up.value.code == "reset_after_send"
    with pytest.raises(NoAnswer, match="invalid HTTP response") as garbage:
        await post(pool, server)
    assert garbage.value.code == "bad_response"
    assert await post(pool, server) == (204, None)


async def test_a_request_lost_on_a_kept_alive_connection_is_not_sent_again(pool: Http1Pool, server: RawServer) -> None:
    # No hidden retries: every request is an attempt the engine records (and retries itself).
    server.replies.extend([[OK], [], [OK], [b"HTTP/1.1 200 OK\r\nContent-Le", HANG_UP]])
    assert await post(pool, server, b'{"n":1}') == (204, None)
    with pytest.raises(NoAnswer, match="connection ended"):
        await post(pool, server, b'{"n":2}')  # dropped without an answer
    assert await post(pool, server, b'{"n":3}') == (204, None)  # on a new connection
    with pytest.raises(NoAnswer):
        await post(pool, server, b'{"n":4}')  # part of an answer, then a hang-up
    assert [r.body for r in server.received] == [b'{"n":1}', b'{"n":2}', b'{"n":3}', b'{"n":4}']


async def test_endless_headers_are_refused(pool: Http1Pool, server: RawServer) -> None:
    server.replies.append([b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n"])
    with pytest.raises(NoAnswer, match="longer than"):
        await post(pool, server)


async def test_no_answer_times_out_and_the_connection_is_dropped(pool: Http1Pool, server: RawServer) -> None:
    server.replies.append([5.0, OK])
    with pytest.raises(NoAnswer) as caught:
        await post(pool, server)
    assert caught.value.code == "timeout_after_send"
    assert await post(pool, server) == (204, None)
    assert server.connections == 2


async def test_at_most_limit_requests_at_once_and_idle_connections_are_capped(server: RawServer) -> None:
    http = Http1Pool(limit=3, timeout_s=2.0, allow_hosts=("127.0.0.1",))
    try:
        for _ in range(10):
            server.replies.append([0.1, OK])
        started = time.monotonic()
        results = await asyncio.gather(*(post(http, server) for _ in range(10)))
        assert results == [(204, None)] * 10
        assert server.connections == 3
        assert time.monotonic() - started >= 0.35  # 10 answers taking 0.1 s each, 3 at a time
        assert sum(len(stack) for stack in http._idle.values()) == 3
    finally:
        await http.close()


async def test_idle_connections_expire(server: RawServer) -> None:
    http = Http1Pool(limit=2, timeout_s=1.0, allow_hosts=("127.0.0.1",), keepalive_s=0.1)
    try:
        assert await post(http, server) == (204, None)
        await asyncio.sleep(0.2)
        assert await post(http, server) == (204, None)
        assert server.connections == 2
    finally:
        await http.close()


async def test_basic_auth_from_the_url_user_info(pool: Http1Pool, server: RawServer) -> None:
    await pool.post(target(server.url(user="hook%20user:s%3Acret@")), None, b"", b"")
    expected = base64.b64encode(b"hook user:s:cret").decode()
    assert f"Authorization: Basic {expected}".encode() in server.received[0].head.split(b"\r\n")


# -- through the provider ------------------------------------------------------------------------------


def webhook_provider(tmp_path: Path, **settings: object) -> WebhookProvider:
    context = ProviderContext("hooks", {"allow_hosts": ["127.0.0.1"], **settings}, tmp_path / "db", tmp_path)
    return WebhookProvider(context)


def envelope(url: str) -> Envelope:
    return Envelope(
        delivery_id=1,
        run_id="r",
        channel="webhook",
        category="transactional",
        idempotency_key="k",
        address=url,
        user_id="u1",
        message_id="msg_1",
        template="t",
        template_version="v",
        parts={"body": {"a": 1}},
        signing_secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


@pytest.mark.parametrize(
    ("url", "code"),
    [("http://ex ample.com/", "bad_url"), ("ftp://127.0.0.1/", "bad_url"), ("http://10.0.0.5/", "bad_url")],
)
async def test_unusable_urls_are_permanent(tmp_path: Path, url: str, code: str) -> None:
    provider = webhook_provider(tmp_path)
    await provider.open()
    try:
        with pytest.raises(PermanentError) as caught:
            await provider.send(envelope(url))
        assert caught.value.code == code
    finally:
        await provider.close()


Where = Callable[[RawServer, ExitStack], str]  # the endpoint URL for a case


def raw(reply: Reply | None) -> Where:
    def where(server: RawServer, _: ExitStack) -> str:
        if reply is not None:
            server.replies.append(reply)
        return server.url()

    return where


def refused(server: RawServer, _: ExitStack) -> str:
    return f"http://127.0.0.1:{closed_port()}/hook"


def blackhole(server: RawServer, stack: ExitStack) -> str:
    return f"http://127.0.0.1:{stack.enter_context(Blackhole()).port}/hook"


def not_tls(server: RawServer, stack: ExitStack) -> str:
    return f"https://127.0.0.1:{stack.enter_context(NotTls()).port}/hook"


@pytest.mark.parametrize(
    ("where", "expected", "code", "received"),
    [
        # Not sent: the request was never written, or the endpoint answered clearly.
        pytest.param(refused, TransientError, "connection", 0, id="not-sent-refused"),
        pytest.param(blackhole, TransientError, "connect_timeout", 0, id="not-sent-connect-timeout"),
        pytest.param(not_tls, TransientError, "tls", 0, id="not-sent-tls-handshake"),
        pytest.param(raw([b"HTTP/1.1 503 Busy\r\n\r\n"]), TransientError, "503", 1, id="not-sent-503"),
        pytest.param(raw([b"HTTP/1.1 400 No\r\n\r\n"]), PermanentError, "400", 1, id="rejected-400"),
        # Unknown: the request was written, then no usable answer.
        pytest.param(raw([]), OutcomeUnknown, "reset_after_send", 1, id="unknown-hang-up"),
        pytest.param(
            raw([b"HTTP/1.1 200 OK\r\nContent-Le", HANG_UP]),
            OutcomeUnknown,
            "reset_after_send",
            1,
            id="unknown-truncated-head",
        ),
        pytest.param(raw([b"SMTP ready\r\n\r\n"]), OutcomeUnknown, "bad_response", 1, id="unknown-garbage"),
        pytest.param(raw([5.0, OK]), OutcomeUnknown, "timeout_after_send", 1, id="unknown-no-answer-in-time"),
    ],
)
async def test_provider_tells_not_sent_from_unknown(
    tmp_path: Path, server: RawServer, where: Where, expected: type[ProviderError], code: str, received: int
) -> None:
    provider = webhook_provider(tmp_path, timeout_s=0.5)
    await provider.open()
    try:
        with ExitStack() as stack:
            url = where(server, stack)
            with pytest.raises(ProviderError) as caught:
                await provider.send(envelope(url))
        assert type(caught.value) is expected, caught.value
        assert caught.value.code == code
        assert len(server.received) == received
        assert (await provider.send(envelope(server.url()))).status_code == 204  # and the next one goes
    finally:
        await provider.close()
