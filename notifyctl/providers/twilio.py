"""SMS through Twilio's Programmable Messaging API, with the twilio package's aiohttp client.

One `send()` is one `POST /2010-04-01/Accounts/{sid}/Messages.json`. The SDK's own retries
stay off (no aiohttp-retry wrapper), so every request Twilio sees is an attempt in the audit
log. Twilio has no idempotency key for messages, so a re-send after an unknown outcome can
double-text: its capabilities say so (`idempotent` stays False), and what fails after the request
was written (no answer within `timeout_s`, the connection lost, a 2xx that is not a message
resource) is an OutcomeUnknown, held for the operator, never retried as if nothing was sent. What
fails before it (no connection, refused, TLS) and every error status Twilio answers are not sent.

`base_url` points the SDK at another host (the local fake in tests) through the public
`Domain.base_url` attribute of `client.api`; nothing inside the SDK is patched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.providers.transports.aiohttp_errors import client_timeout
from notifyctl.providers.transports.aiohttp_errors import provider_error as aiohttp_error
from notifyctl.providers.webhook import parse_retry_after

DEFAULT_TIMEOUT_S = 10.0

SUPPRESS_CODES = frozenset({21610})  # the recipient replied STOP: never text them again
PERMANENT_CODES = frozenset(
    {
        21211,  # invalid 'To' number
        21408,  # region not enabled for this account
        21612,  # this 'To' cannot be reached from this 'From'
        21614,  # 'To' is not a mobile number
        21617,  # body over 1600 characters
    }
)
RATE_LIMIT_CODES = frozenset({20429})


@dataclass
class _Answer:
    """What the current task's request got back, as far as it got: TwilioRestException carries
    status and code but drops the headers, and a ValueError from the SDK's JSON parsing does not
    say whether an answer came (one client serves concurrent sends, hence a context variable)."""

    status: int | None = None
    retry_after: str | None = None


_ANSWER: ContextVar[_Answer | None] = ContextVar("twilio_answer", default=None)


def mask_phone(phone: str) -> str:
    """`+1******2671`: enough to tell numbers apart in an error, not enough to text one."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:2] + "*" * (len(phone) - 6) + phone[-4:]


def provider_error(
    exc: BaseException, *, address: str = "", retry_after: str | None = None, status: int | None = None
) -> ProviderError:
    """The one place where Twilio SDK and transport exceptions become provider errors. `status`: the
    HTTP status of the answer, when one came (a 2xx whose body is not a message is unknown)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = int(exc.status)
        code = int(exc.code) if exc.code is not None else status
        text = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
        if address:
            # Twilio repeats the number in its messages; errors end up in the audit log.
            text = str(text).replace(address, mask_phone(address))
        message = f"twilio: HTTP {status}, code {code}: {text}"
        if code in SUPPRESS_CODES:
            return PermanentError(message, code=str(code), suppress=True)
        if code in PERMANENT_CODES:
            return PermanentError(message, code=str(code))
        if code in RATE_LIMIT_CODES or status == 429:
            return RateLimited(message, retry_after_s=parse_retry_after(retry_after), code=str(code))
        if status >= 500 or status == 408:
            return TransientError(message, retry_after_s=parse_retry_after(retry_after), code=str(code))
        return PermanentError(message, code=str(code))
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return aiohttp_error(exc, "twilio")
    if isinstance(exc, ValueError):
        if status is not None and 200 <= status < 300:
            # Twilio took the request and its answer is not a message: it may or may not exist.
            return OutcomeUnknown(f"twilio: HTTP {status} with an unreadable answer: {exc}", code="bad_response")
        return TransientError(f"twilio: the request could not be made: {exc}", code="bad_request")
    if isinstance(exc, TwilioException):
        return TransientError(f"twilio: {exc}", code="twilio")
    return TransientError(f"twilio: {type(exc).__name__}: {exc}", code="unknown")


@contextmanager
def _mapped_errors(address: str) -> Iterator[_Answer]:
    answer = _Answer()
    token = _ANSWER.set(answer)
    try:
        yield answer
    except (TwilioException, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise provider_error(exc, address=address, retry_after=answer.retry_after, status=answer.status) from exc
    finally:
        _ANSWER.reset(token)


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client, without retries, with distinct connect and read timeouts.

    The stock client passes one number as aiohttp's total timeout (and only the per-request value,
    always None from the REST layer, so it would wait up to five minutes): a total timeout cannot
    say whether the request was written. This one uses `aiohttp_errors.client_timeout`, records
    the answer's status and Retry-After for the error mapping, and builds the Authorization header
    with `aiohttp.encode_basic_auth` (the stock client's `aiohttp.BasicAuth` is deprecated since
    aiohttp 3.14 and gone in 4.0). It returns the SDK's own `Response`, as a custom client does.
    """

    def __init__(self, *, timeout_s: float) -> None:
        # max_retries=None: a plain ClientSession, no aiohttp_retry.RetryClient around it.
        super().__init__(pool_connections=True, timeout=timeout_s, max_retries=None)
        self.client_timeout = client_timeout(timeout_s)

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if auth is not None:
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(auth[0], auth[1])}
        session: aiohttp.ClientSession = self.session
        answer = _ANSWER.get() or _Answer()
        async with session.request(
            method.upper(),
            url,
            params=cast(Any, params),  # the SDK's query values are strings
            data=data,
            headers=headers,
            timeout=self.client_timeout,
            allow_redirects=allow_redirects,
        ) as response:
            answer.status = response.status
            answer.retry_after = response.headers.get("Retry-After")
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                if 200 <= response.status < 300:
                    raise  # created, perhaps, and the answer lost: unknown
                body = b""  # an error status is the answer, even when its body is cut short
        return Response(response.status, body.decode("utf-8", errors="replace"), response.headers)


class TwilioProvider:
    """Sends each SMS envelope as one Twilio message; the result carries the message SID."""

    capabilities = Capabilities(channels=("sms",), max_body_chars=1600)

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        settings = context.settings
        prefix = f"providers.{self.name}"
        self.account_sid = str(settings.get("account_sid") or os.environ.get("TWILIO_ACCOUNT_SID") or "")
        self._auth_token = str(settings.get("auth_token") or os.environ.get("TWILIO_AUTH_TOKEN") or "")
        if not self.account_sid:
            raise ConfigError("no Twilio account SID (or TWILIO_ACCOUNT_SID)", key=f"{prefix}.account_sid")
        if not self._auth_token:
            raise ConfigError("no Twilio auth token (or TWILIO_AUTH_TOKEN)", key=f"{prefix}.auth_token")
        self.from_number = str(settings.get("from_number") or "") or None
        self.messaging_service_sid = str(settings.get("messaging_service_sid") or "") or None
        if not self.from_number and not self.messaging_service_sid:
            raise ConfigError("set from_number or messaging_service_sid", key=f"{prefix}.from_number")
        self.status_callback = str(settings.get("status_callback") or "") or None
        self.base_url = str(settings.get("base_url") or "").rstrip("/") or None
        try:
            self.timeout_s = float(settings.get("timeout_s", DEFAULT_TIMEOUT_S))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"timeout_s must be a number: {exc}", key=f"{prefix}.timeout_s") from exc
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s must be positive", key=f"{prefix}.timeout_s")
        self._http: _HttpClient | None = None
        self._client: Any = None

    async def open(self) -> None:
        # aiohttp wants its session created inside the running loop.
        self._http = _HttpClient(timeout_s=self.timeout_s)
        client = Client(self.account_sid, self._auth_token, http_client=self._http)
        if self.base_url:
            client.api.base_url = self.base_url
            # TWILIO_EDGE / TWILIO_REGION would rewrite the host into `<edge>.<region>.twilio.com`.
            client.edge = None
            client.region = None
        self._client = client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._client = None

    async def send(self, envelope: Envelope) -> SendResult:
        if self._client is None:
            raise RuntimeError(f"provider '{self.name}' is not open")
        text = envelope.parts.get("text")
        if not isinstance(text, str) or not text:
            raise PermanentError("sms envelope has no 'text' part", code="missing_part")
        fields: dict[str, str] = {"to": envelope.address, "body": text}
        # Both may be given: Twilio then sends from that number of the service's sender pool.
        if self.from_number:
            fields["from_"] = self.from_number
        if self.messaging_service_sid:
            fields["messaging_service_sid"] = self.messaging_service_sid
        if self.status_callback:
            fields["status_callback"] = self.status_callback
        with _mapped_errors(envelope.address) as answer:
            message = await self._client.messages.create_async(**fields)
            if not message.sid:
                raise ValueError("no message sid in the answer")  # unknown after a 2xx, see provider_error
        return SendResult(provider=self.name, provider_message_id=str(message.sid), status_code=answer.status or 201)
