"""SMS through Twilio's Programmable Messaging API, with the twilio package's aiohttp client.

One `send()` is one `POST /2010-04-01/Accounts/{sid}/Messages.json`. The SDK's own retries
stay off (no aiohttp-retry wrapper), so every request Twilio sees is an attempt in the audit
log. Twilio has no idempotency key for messages, so a re-send after an unknown outcome can
double-text: its capabilities say so (`idempotent` stays False).

`base_url` points the SDK at another host (the local fake in tests) through the public
`Domain.base_url` attribute of `client.api`; nothing inside the SDK is patched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from notifyctl.errors import ConfigError, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
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

# The Retry-After header of the answer to the current task's request: TwilioRestException
# carries status and code but drops the headers, and one client serves concurrent sends.
_RESPONSE_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("twilio_response_headers", default=None)


def mask_phone(phone: str) -> str:
    """`+1******2671`: enough to tell numbers apart in an error, not enough to text one."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:2] + "*" * (len(phone) - 6) + phone[-4:]


def provider_error(exc: BaseException, *, address: str = "", retry_after: str | None = None) -> ProviderError:
    """The one place where Twilio SDK and transport exceptions become provider errors."""
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
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return TransientError(f"twilio: connection failed: {type(exc).__name__}: {exc}", code="connection")
    if isinstance(exc, ValueError):
        # A 2xx answer that is not JSON: the message may or may not exist.
        return TransientError(f"twilio: unreadable answer: {exc}", code="bad_response")
    if isinstance(exc, TwilioException):
        return TransientError(f"twilio: {exc}", code="twilio")
    return TransientError(f"twilio: {type(exc).__name__}: {exc}", code="unknown")


@contextmanager
def _mapped_errors(address: str) -> Iterator[None]:
    response_headers: dict[str, str] = {}
    token = _RESPONSE_HEADERS.set(response_headers)
    try:
        yield
    except (TwilioException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise provider_error(exc, address=address, retry_after=response_headers.get("retry-after")) from exc
    finally:
        _RESPONSE_HEADERS.reset(token)


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client, without retries, with its timeout applied and Retry-After kept.

    The stock client keeps `timeout` but passes only the per-request value (always None from the
    REST layer) to aiohttp, which would then wait up to five minutes. It also turns `auth` into
    `aiohttp.BasicAuth`, deprecated since aiohttp 3.14 and gone in 4.0; the same header is built
    here with `aiohttp.encode_basic_auth` instead.
    """

    def __init__(self, *, timeout_s: float) -> None:
        # max_retries=None: a plain ClientSession, no aiohttp_retry.RetryClient around it.
        super().__init__(pool_connections=True, timeout=timeout_s, max_retries=None)

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
    ) -> Any:
        if auth is not None:
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(auth[0], auth[1])}
        response = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects,
        )
        recorded = _RESPONSE_HEADERS.get()
        retry_after = response.headers.get("Retry-After") if response.headers is not None else None
        if recorded is not None and retry_after is not None:
            recorded["retry-after"] = str(retry_after)
        return response


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
        with _mapped_errors(envelope.address):
            message = await self._client.messages.create_async(**fields)
        return SendResult(provider=self.name, provider_message_id=str(message.sid), status_code=201)
