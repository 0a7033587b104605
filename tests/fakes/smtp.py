"""An SMTP server for tests: aiosmtpd's threaded `Controller` on 127.0.0.1, ephemeral port.

    with FakeSmtp() as smtp:
        settings = {"host": smtp.host, "port": smtp.port, "from_address": ..., "start_tls": False}
        smtp.refuse("gone@example.org")                    # 550 5.1.1 at RCPT, from now on
        smtp.script_rcpt("451 4.3.0 Try again later")      # the next RCPT only
        smtp.script_data(DROP)                             # the next DATA: connection dropped, no reply
        smtp.refuse_login("535 5.7.8 bad password {password}")  # every AUTH from now on
        smtp.script_data(ACCEPT_THEN_DROP)                 # the next message is kept, then the connection
                                                           # drops before the reply to its final "."
        smtp.script_data(stall(3))                         # (or script_rcpt) the reply comes 3 s late;
                                                           # in DATA, the message is kept first
        smtp.script_data_command(DROP)                     # the next DATA command: dropped before 354
        ...
        assert smtp.messages[0].message()["Subject"] == "Hello"
        assert smtp.connections == 1                       # sessions that said EHLO/HELO
        smtp.drop_connections()                            # close every open connection now
        smtp.restart()                                     # stop, then listen again on the same port

`transactions` counts MAIL FROM commands: one per message a client tried to send. AUTH (PLAIN,
LOGIN) is offered without TLS and accepts any credentials unless `refuse_login` says otherwise.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, syntax

DROP = "drop"  # as a scripted reply: close the connection instead of answering
ACCEPT_THEN_DROP = "accept-then-drop"  # as a scripted DATA reply: keep the message, then close
_STALL = "stall "
DEFAULT_REFUSAL = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"
SERVER_NAME = "fake-smtp.test"


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes  # exactly the bytes of the DATA command, dot-unstuffed
    peer_port: int

    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def stall(seconds: float) -> str:
    """As a scripted reply: answer `seconds` late (in DATA, with the message already kept)."""
    return f"{_STALL}{seconds}"


async def _stalled(reply: str, answer: str) -> str:
    """`answer`, after the pause a stall reply asks for."""
    await asyncio.sleep(float(reply[len(_STALL) :]))
    return answer


class _Handler:
    """aiosmtpd handler hooks; all state lives in the FakeSmtp."""

    def __init__(self, fake: FakeSmtp) -> None:
        self.fake = fake

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.fake._greeted(session.peer)
        return responses

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        session.host_name = hostname
        self.fake._greeted(session.peer)
        return f"250 {SERVER_NAME}"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        with self.fake._lock:
            self.fake.transactions += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self.fake._rcpt_reply(address)
        if reply == DROP:
            server.transport.abort()
            return "421 4.4.2 closing"
        if reply is not None and not reply.startswith(_STALL):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return await _stalled(reply, "250 OK") if reply else "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.fake._data_reply()
        if reply == DROP:
            # abort(): no FIN-and-flush of a reply; the client sees the connection vanish mid-DATA.
            server.transport.abort()
            return "421 4.4.2 closing"
        if reply is not None and reply != ACCEPT_THEN_DROP and not reply.startswith(_STALL):
            return reply
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=bytes(envelope.original_content or envelope.content),
            peer_port=int(session.peer[1]),
        )
        with self.fake._lock:
            self.fake._messages.append(mail)
        accepted = "250 2.0.0 Message accepted for delivery"
        if reply == ACCEPT_THEN_DROP:
            server.transport.abort()  # the message is queued here; its "250" never leaves
            return accepted
        return await _stalled(reply, accepted) if reply else accepted


class _TrackedSMTP(SMTP):
    """aiosmtpd's protocol, keeping the fake's set of open connections current."""

    def __init__(self, handler: _Handler, fake: FakeSmtp, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._fake = fake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._fake._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._fake._live.discard(self)
        super().connection_lost(error)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self._fake._data_command_reply() == DROP and self.transport is not None:
            cast(asyncio.Transport, self.transport).abort()  # before the 354: the message was never written
            return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    """Controller that can listen on port 0: the bound port is read back before the readiness probe."""

    def __init__(self, fake: FakeSmtp, port: int) -> None:
        super().__init__(
            _Handler(fake),
            hostname="127.0.0.1",
            port=port,
            server_hostname=SERVER_NAME,
            ready_timeout=5,
            authenticator=fake._authenticate,
            auth_require_tls=False,
        )
        self._fake = fake

    def factory(self) -> SMTP:
        return _TrackedSMTP(self.handler, self._fake, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self._bind()

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context, reuse_address=True
        )
        self.port = int(server.sockets[0].getsockname()[1])
        return server


class FakeSmtp:
    """The server; use as a context manager (or start()/stop())."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self.transactions = 0
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._peers: set[tuple[str, int]] = set()
        self._refusals: dict[str, str] = {}
        self._rcpt_script: deque[str] = deque()
        self._data_script: deque[str] = deque()
        self._login_refusal: str | None = None
        self._data_command_script: deque[str] = deque()
        self._live: set[_TrackedSMTP] = set()  # touched only on the server's loop
        self._controller: _Controller | None = None

    # -- what tests use ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """Client connections that said EHLO or HELO since the fake was created."""
        with self._lock:
            return len(self._peers)

    def refuse(self, address: str, reply: str = DEFAULT_REFUSAL) -> None:
        """Answer RCPT TO for `address` with `reply` from now on."""
        with self._lock:
            self._refusals[address.lower()] = reply.format(address=address)

    def script_rcpt(self, *replies: str) -> None:
        """Answer the next RCPT commands (any recipient) with these replies, in order (DROP closes)."""
        with self._lock:
            self._rcpt_script.extend(replies)

    def script_data(self, *replies: str) -> None:
        """Answer the next DATA commands with these replies, in order (DROP closes)."""
        with self._lock:
            self._data_script.extend(replies)

    def refuse_login(self, reply: str) -> None:
        """Answer every AUTH from now on with `reply`, formatted with the client's {login} and {password}
        (servers that quote what they were given)."""
        with self._lock:
            self._login_refusal = reply

    def script_data_command(self, *replies: str) -> None:
        """Answer the next DATA commands, before their 354, with these (only DROP for now)."""
        with self._lock:
            self._data_command_script.extend(replies)

    def clear(self) -> None:
        with self._lock:
            self._login_refusal = None
            self._messages.clear()
            self._peers.clear()
            self._refusals.clear()
            self._rcpt_script.clear()
            self._data_script.clear()
            self._data_command_script.clear()
            self.transactions = 0

    def drop_connections(self) -> None:
        """Close every open client connection from the server side (an idle timeout, a restart)."""
        controller = self._controller
        if controller is not None:
            self._run_on(controller, self._close_live())

    def restart(self) -> None:
        """Stop, then listen again on the same port."""
        self.stop()
        self.start()

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        controller = _Controller(self, self.port)
        controller.start()
        self.port = int(controller.port)
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is None:
            return
        self._run_on(controller, self._close_live())
        controller.stop()

    # -- internals --------------------------------------------------------------------------------

    @staticmethod
    def _run_on(controller: _Controller, coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, controller.loop).result(timeout=5)

    async def _close_live(self) -> None:
        for protocol in list(self._live):
            if protocol.transport is not None:
                protocol.transport.close()
        # Let connection_lost run for each before reporting back.
        for _ in range(20):
            if not self._live:
                return
            await asyncio.sleep(0.01)

    def _greeted(self, peer: tuple[str, int]) -> None:
        with self._lock:
            self._peers.add((peer[0], int(peer[1])))

    def _rcpt_reply(self, address: str) -> str | None:
        with self._lock:
            if self._rcpt_script:
                return self._rcpt_script.popleft()
            return self._refusals.get(address.lower())

    def _data_reply(self) -> str | None:
        with self._lock:
            return self._data_script.popleft() if self._data_script else None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        with self._lock:
            refusal = self._login_refusal
        if refusal is None:
            return AuthResult(success=True, auth_data=auth_data)
        login = password = ""
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
        return AuthResult(success=False, handled=False, message=refusal.format(login=login, password=password))

    def _data_command_reply(self) -> str | None:
        with self._lock:
            return self._data_command_script.popleft() if self._data_command_script else None
