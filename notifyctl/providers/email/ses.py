"""Email through Amazon SES (API v2, `SendEmail`) with aioboto3.

One client per provider account, entered in open() and kept until close(). botocore's own
retries are off (`total_max_attempts=1`): every request SES sees is an attempt the pipeline
recorded. SendEmail has no idempotency token, so a failure after the request was written (a read
timeout, the connection closed, an answer that cannot be parsed) is an unknown outcome, held for
the operator; one before it (no connection, a connect timeout, TLS) was not sent. Marketing email
carries List-Unsubscribe headers, which SES's "Simple" content cannot set, so an envelope with
headers goes out as raw MIME built by notifyctl.providers.email.mime.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import SSLError as BotoSSLError
from botocore.parsers import ResponseParserError

from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.providers.email.mime import build_message_bytes, domain_of
from notifyctl.providers.transports.aiohttp_errors import provider_error as aiohttp_error

DEFAULT_REGION = "us-east-1"

THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "LimitExceededException"}
)
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "BadRequestException",
        "NotFoundException",
    }
)


def _client_error(exc: ClientError) -> ProviderError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    message = str(error.get("Message") or exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in THROTTLING_CODES or status == 429:
        # SES sends no Retry-After; the pipeline's backoff decides.
        return RateLimited(f"SES throttled: {message}", retry_after_s=None, code=code)
    if code in PERMANENT_CODES:
        return PermanentError(f"SES rejected the message: {message}", code=code)
    if status >= 500:
        return TransientError(f"SES error {status}: {message}", code=code)
    # Other 4xx answers (AccessDenied, signature or token problems) will not go away on a retry.
    return PermanentError(f"SES refused the request ({status}): {message}", code=code)


def _transport_error(exc: Exception) -> ProviderError:
    """Not sent, or unknown: whether the request may have reached SES whole.

    Not sent: ConnectTimeoutError, SSLError (the handshake), ProxyConnectionError, and the
    EndpointConnectionError of a connection that could not be made. aiobotocore also wraps an
    aiohttp error after the request was written (a reset) in EndpointConnectionError, so its cause
    is read again (`kwargs["error"]`) with the aiohttp table. Unknown: ReadTimeoutError,
    ConnectionClosedError, ResponseParserError, and any other failure once the request was made.
    """
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ConnectTimeoutError):
        return TransientError(f"SES: no connection before the timeout (not sent): {detail}", code="connect_timeout")
    if isinstance(exc, BotoSSLError | ProxyConnectionError):
        return TransientError(f"SES: cannot connect (not sent): {detail}", code="connection")
    if isinstance(exc, EndpointConnectionError):
        cause = exc.kwargs.get("error")
        if cause is None or isinstance(cause, socket.gaierror):
            return TransientError(f"SES: cannot connect (not sent): {detail}", code="connection")
        if isinstance(cause, Exception):
            return aiohttp_error(cause, "SES")
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return OutcomeUnknown(f"SES: no answer in time after the request was sent: {detail}", code="timeout_after_send")
    if isinstance(exc, ResponseParserError):
        return OutcomeUnknown(f"SES: unreadable answer: {detail}", code="bad_response")
    return OutcomeUnknown(f"SES: connection lost after the request was sent: {detail}", code="reset_after_send")


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """The one place where botocore exceptions become provider errors."""
    try:
        yield
    except ProviderError:
        raise
    except ClientError as exc:
        raise _client_error(exc) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise PermanentError(f"no usable AWS credentials: {exc}", code="credentials") from exc
    except (BotoConnectionError, HTTPClientError, ResponseParserError, TimeoutError, OSError) as exc:
        raise _transport_error(exc) from exc
    except BotoCoreError as exc:
        # ParamValidationError and friends: the request itself is wrong.
        raise PermanentError(f"SES request invalid: {exc}", code=type(exc).__name__) from exc


def _simple_content(envelope: Envelope) -> dict[str, Any]:
    parts = envelope.parts
    body: dict[str, Any] = {}
    if parts.get("text"):
        body["Text"] = {"Data": str(parts["text"]), "Charset": "UTF-8"}
    if parts.get("html"):
        body["Html"] = {"Data": str(parts["html"]), "Charset": "UTF-8"}
    if not body:
        raise PermanentError("email has neither a text nor an HTML part", code="empty_body")
    subject = {"Data": str(parts.get("subject") or ""), "Charset": "UTF-8"}
    return {"Simple": {"Subject": subject, "Body": body}}


class SesProvider:
    """Sends each email envelope with SESv2 SendEmail; the result carries SES's MessageId."""

    capabilities = Capabilities(channels=("email",), supports_html=True, max_payload_bytes=40 * 1024 * 1024)

    def __init__(self, context: ProviderContext) -> None:
        settings = context.settings
        self.name = context.name
        self._settings_key = f"providers.{self.name}"
        self._session = aioboto3.Session()
        self.region = str(settings.get("region") or self._session.region_name or DEFAULT_REGION)
        self.endpoint_url: str | None = settings.get("endpoint_url") or None
        self.from_address: str | None = settings.get("from_address") or None
        self.message_id_domain: str | None = settings.get("message_id_domain") or None
        self.configuration_set: str | None = settings.get("configuration_set") or None
        tags = settings.get("tags") or {}
        if not isinstance(tags, dict):
            raise ConfigError("tags must be a table of name = value", key=f"{self._settings_key}.tags")
        self.tags = [{"Name": str(name), "Value": str(value)} for name, value in tags.items()]
        self.timeout_s = float(settings.get("timeout_s", 10))
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def open(self) -> None:
        if not self.from_address:
            raise ConfigError("the SES provider needs a sender address", key=f"{self._settings_key}.from_address")
        try:
            domain = domain_of(self.from_address)
        except PermanentError as exc:
            raise ConfigError(f"invalid from address: {exc}", key=f"{self._settings_key}.from_address") from exc
        self.message_id_domain = self.message_id_domain or domain
        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=self.timeout_s,
            read_timeout=self.timeout_s,
        )
        stack = AsyncExitStack()
        client_context = self._session.client(
            "sesv2", region_name=self.region, endpoint_url=self.endpoint_url, config=config
        )
        self._client = await stack.enter_async_context(client_context)
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()

    async def send(self, envelope: Envelope) -> SendResult:
        client = self._client
        if client is None or self.from_address is None or self.message_id_domain is None:
            raise RuntimeError(f"provider {self.name} used before open()")
        with _mapped_errors():
            if envelope.headers:
                data = build_message_bytes(envelope, self.from_address, self.message_id_domain)
                content: dict[str, Any] = {"Raw": {"Data": data}}
            else:
                content = _simple_content(envelope)
            request: dict[str, Any] = {
                "FromEmailAddress": self.from_address,
                "Destination": {"ToAddresses": [envelope.address]},
                "Content": content,
            }
            if self.configuration_set:
                request["ConfigurationSetName"] = self.configuration_set
            if self.tags:
                request["EmailTags"] = self.tags
            response = await client.send_email(**request)
        message_id = response.get("MessageId") if isinstance(response, dict) else None
        if not message_id:
            # SES took the request (a 2xx), and its answer does not say what became of the message.
            raise OutcomeUnknown("SES answered without a MessageId", code="bad_response")
        return SendResult(
            provider=self.name,
            provider_message_id=str(message_id),
            status_code=int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 200),
        )
