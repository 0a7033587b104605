"""Email through the Postmark HTTP API (`POST /email`, `POST /email/batch`), with transports/json_api.py.

Postmark answers 200 with a MessageID, 422 with an `ErrorCode` for a message it will not send
(406: the recipient is inactive, a hard bounce or spam complaint, so the address is suppressed),
401 for a bad server token and 429 when the account is over its rate. The batch endpoint answers
200 even when single messages fail; each entry of the answer carries its own ErrorCode, in the
order of the request. A 200 whose result cannot be read (not JSON, or fewer batch entries than
messages) is an unknown outcome: Postmark has no idempotency key, so such a message is held, not
sent again (README, "Guarantees").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from notifyctl.addresses import AddressError, normalize_email
from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.providers.email.mime import RESERVED_HEADERS
from notifyctl.providers.transports.json_api import JsonApi
from notifyctl.providers.webhook import parse_retry_after

DEFAULT_BASE_URL = "https://api.postmarkapp.com"
DEFAULT_STREAM = "outbound"
TOKEN_ENV = "POSTMARK_SERVER_TOKEN"
BATCH_LIMIT = 500
USER_AGENT = "notifyctl-postmark/0.1"

INACTIVE_RECIPIENT = 406  # hard bounce, spam complaint or manual suppression at Postmark

_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'


def _error_for_code(error_code: int, message: str) -> ProviderError:
    """A Postmark ErrorCode (non-zero) as a provider error; every one of them means "not this message"."""
    detail = f"Postmark ErrorCode {error_code}: {message}"
    if error_code == INACTIVE_RECIPIENT:
        return PermanentError(detail, code=str(error_code), suppress=True)
    return PermanentError(detail, code=str(error_code))


def _error_for_response(status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
    """The provider error meant by a non-200 answer of the API."""
    error_code = body.get("ErrorCode") if isinstance(body, dict) else None
    message = str(body.get("Message", "")) if isinstance(body, dict) else ""
    retry_after_s = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return RateLimited(f"Postmark rate limit: HTTP 429 {message}", retry_after_s=retry_after_s, code="429")
    if status == 408 or status >= 500:
        return TransientError(f"Postmark error: HTTP {status} {message}", retry_after_s=retry_after_s, code=str(status))
    if status == 422 and isinstance(error_code, int) and error_code:
        return _error_for_code(error_code, message)
    code = str(error_code) if isinstance(error_code, int) and error_code else str(status)
    return PermanentError(f"Postmark refused the request: HTTP {status} {message}", code=code)


def _headers_field(headers: Mapping[str, str]) -> list[dict[str, str]]:
    checked = []
    for name, value in headers.items():
        if name.lower() in RESERVED_HEADERS:
            raise PermanentError(f"header {name} is set by notifyctl and cannot be overridden", code="bad_header")
        if not _HEADER_NAME.fullmatch(name) or any(char in value for char in "\r\n\0"):
            raise PermanentError(f"header {name!r} is malformed (header injection?)", code="bad_header")
        checked.append({"Name": name, "Value": value})
    return checked


class PostmarkProvider:
    """Sends email envelopes through Postmark, one at a time or up to 500 per batch request."""

    capabilities = Capabilities(channels=("email",), supports_html=True, batch_size=BATCH_LIMIT)

    def __init__(self, context: ProviderContext) -> None:
        settings = context.settings
        self.name = context.name
        self._settings_key = f"providers.{self.name}"
        self.base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.server_token: str | None = settings.get("server_token") or os.environ.get(TOKEN_ENV) or None
        self.from_address: str | None = settings.get("from_address") or None
        self.message_stream = str(settings.get("message_stream") or DEFAULT_STREAM)
        self.timeout_s = float(settings.get("timeout_s", 10))
        self.connections = int(settings.get("connections", settings.get("concurrency", 32)))
        self._api: JsonApi | None = None

    def __repr__(self) -> str:
        return f"PostmarkProvider(name={self.name!r}, base_url={self.base_url!r})"

    async def open(self) -> None:
        if not self.from_address:
            raise ConfigError("the Postmark provider needs a sender address", key=f"{self._settings_key}.from_address")
        if not self.server_token:
            raise ConfigError(
                f"the Postmark provider needs a server token (or {TOKEN_ENV})", key=f"{self._settings_key}.server_token"
            )
        self._api = JsonApi(
            self.base_url,
            label="Postmark",
            timeout_s=self.timeout_s,
            connections=self.connections,
            headers={"X-Postmark-Server-Token": self.server_token, "User-Agent": USER_AGENT},
        )
        await self._api.open()

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.close()

    async def send(self, envelope: Envelope) -> SendResult:
        message = self._message(envelope)
        status, headers, body = await self._post("/email", message)
        if status != 200:
            raise _error_for_response(status, body, headers)
        return self._result(body, status)

    async def send_batch(self, envelopes: list[Envelope]) -> list[SendResult | ProviderError]:
        """One request for up to 500 envelopes; the answer holds one result or error per envelope, in order."""
        if len(envelopes) > BATCH_LIMIT:
            raise ValueError(f"a Postmark batch holds at most {BATCH_LIMIT} messages, got {len(envelopes)}")
        # Envelopes refused locally (bad address or header) keep their place but are not posted.
        local_errors: dict[int, ProviderError] = {}
        messages: list[dict[str, Any]] = []
        for index, envelope in enumerate(envelopes):
            try:
                messages.append(self._message(envelope))
            except PermanentError as exc:
                local_errors[index] = exc
        answers: list[Any] = []
        if messages:
            status, headers, body = await self._post("/email/batch", messages)
            if status != 200:
                raise _error_for_response(status, body, headers)
            answers = body if isinstance(body, list) else []
            if len(answers) != len(messages):
                # Postmark took the request; without one answer per message the outcome of each is unknown.
                raise OutcomeUnknown(
                    f"Postmark batch answered 200 with {len(answers)} readable entries for {len(messages)} messages",
                    code="bad_response",
                )
        pending = iter(answers)
        return [local_errors.get(index) or self._batch_entry(next(pending)) for index in range(len(envelopes))]

    def _batch_entry(self, answer: Any) -> SendResult | ProviderError:
        try:
            return self._result(answer, 200)
        except ProviderError as exc:
            return exc

    def _result(self, body: Any, status: int) -> SendResult:
        if not isinstance(body, dict):
            # A 200 whose result cannot be read: Postmark may have taken the message, or not.
            raise OutcomeUnknown("Postmark answered 200 without a readable result", code="bad_response")
        answer = body
        error_code = answer.get("ErrorCode", 0)
        if isinstance(error_code, int) and error_code:
            raise _error_for_code(error_code, str(answer.get("Message", "")))
        message_id = answer.get("MessageID")
        # A readable 200 without an ErrorCode means Postmark took the message, id or not.
        return SendResult(
            provider=self.name, provider_message_id=str(message_id) if message_id else None, status_code=status
        )

    def _message(self, envelope: Envelope) -> dict[str, Any]:
        parts = envelope.parts
        try:
            # Postmark reads a comma-separated list in To; one validated address keeps it to one recipient.
            to_address = normalize_email(envelope.address)
        except AddressError as exc:
            raise PermanentError(str(exc), code="bad_address") from exc
        if not parts.get("text") and not parts.get("html"):
            raise PermanentError("email has neither a text nor an HTML part", code="empty_body")
        message: dict[str, Any] = {
            "From": self.from_address,
            "To": to_address,
            "Subject": str(parts.get("subject") or ""),
            "MessageStream": self.message_stream,
            "Headers": _headers_field(envelope.headers),
        }
        if parts.get("text"):
            message["TextBody"] = str(parts["text"])
        if parts.get("html"):
            message["HtmlBody"] = str(parts["html"])
        return message

    async def _post(self, path: str, payload: Any) -> tuple[int, Mapping[str, str], Any]:
        """POST JSON; the status, the headers and the parsed JSON answer (None when it is not JSON)."""
        api = self._api
        if api is None:
            raise RuntimeError(f"provider {self.name} used before open()")
        answer = await api.post(path, payload)
        return answer.status, answer.headers, answer.body
