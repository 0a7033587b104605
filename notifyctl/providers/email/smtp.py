"""Email over SMTP with aiosmtplib, through a small pool of persistent connections.

Connections are opened lazily, at most `pool_size` at a time, and kept between sends. A
connection that broke (the server closed it, a timeout left it in an unknown state) is dropped
and a fresh one is opened on the next send. The message is the RFC 5322 message of
notifyctl.providers.email.mime, so its Message-ID is the same on every attempt.

A send is driven phase by phase with aiosmtplib's public commands (`ehlo`, `mail`, `rcpt`,
`data`) rather than one `sendmail`, so that a failure says whether the message may have been
taken. Until the DATA step nothing can have been delivered: a lost connection, a timeout or a
refusal at connect, EHLO, STARTTLS, AUTH, MAIL or RCPT is not sent (TransientError, or the
reply's class). The DATA step is one call in aiosmtplib (`SMTP.data()` sends DATA, waits for 354,
writes the message and the final ".", and waits for the reply); its public API cannot write the
message on its own, so the step is not split further. A reply in it is clear (4xx transient, 5xx
permanent: the message was refused), but a disconnect or a timeout in it is an unknown outcome
(OutcomeUnknown `reset_after_send` / `timeout_after_send`): once the "." is written the server
may have queued the message before the connection went. The few drops between DATA and 354 are
counted with them: a message held for the operator is better than one sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.providers.email.mime import RenderedEmail, build_message, domain_of, render_email

DEFAULT_POOL_SIZE = 4
QUIT_TIMEOUT_S = 2.0
SERVICE_CLOSING = 421  # the server is about to drop this connection

# RFC 3463 enhanced codes that say the mailbox does not exist (hard bounce at RCPT time).
_BAD_MAILBOX = re.compile(r"5\.1\.(1|10)\b")


_THROTTLED = re.compile(r"^\s*4\.7\.\d{1,3}\b")


def _response_error(code: int, message: str, stage: str) -> ProviderError:
    detail = f"SMTP {stage} refused: {code} {message}".strip()
    if 400 <= code < 500:
        # RFC 3463 4.7.x is the server's policy saying "slow down": throttle, not just retry.
        if _THROTTLED.match(message):
            return RateLimited(detail, code=str(code))
        return TransientError(detail, code=str(code))
    if 500 <= code < 600:
        suppress = stage == "recipient" and bool(_BAD_MAILBOX.match(message))
        return PermanentError(detail, code=str(code), suppress=suppress)
    return TransientError(f"SMTP unexpected reply: {code} {message}", code=str(code))


def _stage(exc: SMTPResponseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return "recipient"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "sender"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "data"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return "login"
    return "command"


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """The one place where aiosmtplib and socket exceptions become provider errors."""
    try:
        yield
    except ProviderError:
        raise
    except SMTPRecipientsRefused as exc:
        refusals = exc.recipients
        # A temporary refusal of any recipient means the message may still go through later.
        worst = next((r for r in refusals if 400 <= r.code < 500), refusals[0] if refusals else None)
        if worst is None:
            raise TransientError("SMTP recipients refused without a reply", code="rcpt") from exc
        raise _response_error(worst.code, worst.message, "recipient") from exc
    except SMTPResponseException as exc:
        raise _response_error(exc.code, exc.message, _stage(exc)) from exc
    except SMTPNotSupported as exc:
        # SMTPUTF8, STARTTLS or AUTH missing on the server: a configuration problem, not a glitch.
        raise PermanentError(f"SMTP server lacks a needed extension: {exc}", code="not_supported") from exc
    except (SMTPException, TimeoutError, OSError) as exc:
        # SMTPServerDisconnected, SMTPConnectError, SMTPTimeoutError, refused or reset sockets, TLS.
        raise TransientError(f"SMTP connection failed: {type(exc).__name__}: {exc}", code="connection") from exc
    except ValueError as exc:
        # aiosmtplib refuses addresses it cannot put on the wire safely.
        raise PermanentError(f"SMTP cannot send to this address: {exc}", code="bad_address") from exc


async def _transaction(client: aiosmtplib.SMTP, rendered: RenderedEmail, message: EmailMessage | None) -> None:
    """One mail transaction, phase by phase (what `sendmail` / `send_message` do, with the DATA step
    told apart): a disconnect or timeout in the DATA step is OutcomeUnknown; before it, not sent.
    `message` is given for an address that needs SMTPUTF8 (written with UTF-8 headers)."""
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()
    options: list[str] = []
    encoding = "ascii"
    if message is None:
        data = rendered.data
    else:
        if not client.supports_extension("smtputf8"):
            raise SMTPNotSupported("the address needs SMTPUTF8, which the server does not offer")
        options.append("SMTPUTF8")
        eight_bit = client.supports_extension("8bitmime")
        if eight_bit:
            options.append("BODY=8BITMIME")
        data = message.as_bytes(policy=email.policy.SMTPUTF8.clone(cte_type="8bit" if eight_bit else "7bit"))
        encoding = "utf-8"
    if client.supports_extension("size"):
        options.insert(0, f"SIZE={len(data)}")
    try:
        await client.mail(rendered.sender, options=options, encoding=encoding)
        await client.rcpt(rendered.recipient, encoding=encoding)
    except SMTPResponseException:
        with contextlib.suppress(SMTPException, TimeoutError, OSError):
            await client.rset()  # the envelope is reset, as sendmail does: the connection stays usable
        raise
    try:
        await client.data(data)
    except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
        code = "timeout_after_send" if isinstance(exc, TimeoutError | SMTPTimeoutError) else "reset_after_send"
        raise OutcomeUnknown(
            f"SMTP: {type(exc).__name__} in the DATA step, the message may have been taken: {exc}", code=code
        ) from exc


def _still_usable(exc: BaseException) -> bool:
    """Whether the connection is in a known, idle state after `exc` (sendmail sent RSET)."""
    if isinstance(exc, SMTPRecipientsRefused):
        return all(refusal.code != SERVICE_CLOSING for refusal in exc.recipients)
    if isinstance(exc, SMTPResponseException):
        return exc.code != SERVICE_CLOSING
    return False


class SmtpProvider:
    """Sends each email envelope over SMTP; the result carries the message's Message-ID."""

    capabilities = Capabilities(channels=("email",), supports_html=True)

    def __init__(self, context: ProviderContext) -> None:
        settings = context.settings
        self.name = context.name
        self._settings_key = f"providers.{self.name}"
        self.host = str(settings.get("host") or "localhost")
        port = settings.get("port")
        self.port: int | None = int(port) if port else None
        self.username: str | None = settings.get("username") or None
        self.password: str | None = settings.get("password") or None
        self.use_tls = bool(settings.get("use_tls", False))
        start_tls = settings.get("start_tls")
        self.start_tls: bool | None = None if start_tls is None else bool(start_tls)
        self.validate_certs = bool(settings.get("validate_certs", True))
        self.local_hostname: str | None = settings.get("local_hostname") or None
        self.timeout_s = float(settings.get("timeout_s", 10))
        self.pool_size = int(settings.get("pool_size", DEFAULT_POOL_SIZE))
        if self.pool_size < 1:
            raise ConfigError("pool_size must be at least 1", key=f"{self._settings_key}.pool_size")
        self.from_address: str | None = settings.get("from_address") or None
        self.message_id_domain: str | None = settings.get("message_id_domain") or None
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.pool_size)
        self._clients: set[aiosmtplib.SMTP] = set()
        self._opened = False

    async def open(self) -> None:
        if not self.from_address:
            raise ConfigError("the SMTP provider needs a sender address", key=f"{self._settings_key}.from_address")
        try:
            domain = domain_of(self.from_address)
        except PermanentError as exc:
            raise ConfigError(f"invalid from address: {exc}", key=f"{self._settings_key}.from_address") from exc
        self.message_id_domain = self.message_id_domain or domain
        self._opened = True

    async def close(self) -> None:
        self._opened = False
        clients, self._clients = list(self._clients), set()
        while not self._idle.empty():
            self._idle.get_nowait()
        for client in clients:
            if client.is_connected:
                with contextlib.suppress(SMTPException, TimeoutError, OSError):
                    await client.quit(timeout=QUIT_TIMEOUT_S)
            client.close()

    async def send(self, envelope: Envelope) -> SendResult:
        if not self._opened or self.from_address is None or self.message_id_domain is None:
            raise RuntimeError(f"provider {self.name} used before open()")
        with _mapped_errors():
            rendered = render_email(envelope, self.from_address, self.message_id_domain)
            # An international address needs SMTPUTF8 and UTF-8 headers: aiosmtplib writes those
            # from the message object. Everything else goes out as the 7-bit bytes.
            message = None
            if not (rendered.sender + rendered.recipient).isascii():
                message = build_message(envelope, self.from_address, self.message_id_domain)
            async with self._slots:
                client = await self._checkout()
                await self._send_on(client, rendered, message)
        return SendResult(provider=self.name, provider_message_id=rendered.message_id)

    async def _send_on(self, client: aiosmtplib.SMTP, rendered: RenderedEmail, message: EmailMessage | None) -> None:
        try:
            await _transaction(client, rendered, message)
        except BaseException as exc:
            self._checkin(client, usable=_still_usable(exc))
            raise
        self._checkin(client, usable=True)

    async def _checkout(self) -> aiosmtplib.SMTP:
        """An idle connected client, or a new connection when none is idle."""
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
            self._discard(client)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            validate_certs=self.validate_certs,
            local_hostname=self.local_hostname,
            timeout=self.timeout_s,
        )
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        self._clients.add(client)
        return client

    def _checkin(self, client: aiosmtplib.SMTP, *, usable: bool) -> None:
        if usable and client.is_connected and self._opened:
            self._idle.put_nowait(client)
        else:
            self._discard(client)

    def _discard(self, client: aiosmtplib.SMTP) -> None:
        self._clients.discard(client)
        client.close()
