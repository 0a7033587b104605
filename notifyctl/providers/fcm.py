"""Push through Firebase Cloud Messaging (HTTP v1 API) with firebase-admin.

One envelope is one `POST /v1/projects/{project}/messages:send`; `send_batch` sends up to 500
concurrently with `send_each_async` and answers per message. The envelope's address is a device
registration token, or `/topics/<name>` for a topic. FCM only accepts string data values, so
other values are sent as compact JSON (`3` → `"3"`, `true` → `"true"`, `{"a": 1}` → `'{"a":1}'`).

Why a subclass of firebase-admin's `_MessagingService`: the SDK builds its FCM client from
hard-wired values, the `https://fcm.googleapis.com` URL (formatted in `__init__`, no option or
environment variable overrides it) and an httpx transport that retries 500/503 four times with
backoff. notifyctl needs both under its control (a local server in tests; no hidden retries),
so `_FcmService` replaces exactly those two after the SDK's own constructor has run. Message
encoding and validation, the OAuth flow, HTTP/2 and the parsing of errors into
`FirebaseError` subclasses stay the SDK's. The OAuth token endpoint is the service-account
JSON's own `token_uri`, so it needs no override.

google-auth refreshes the OAuth token with a blocking `requests` call; the provider refreshes
it in a worker thread before a batch so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import firebase_admin
import httpx
from firebase_admin import _http_client, credentials, exceptions, messaging
from firebase_admin._retry import HttpxRetry
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.auth.transport.requests import Request as AuthRequest

from notifyctl.errors import ConfigError, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.providers.webhook import parse_retry_after

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
DEFAULT_TIMEOUT_S = 10.0
BATCH_SIZE = 500  # FCM's limit for one send_each call
TOPIC_PREFIX = "/topics/"
DEVICE_ID_FIELDS = ("token", "fid")

_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_TRANSIENT_CODES = frozenset(
    {exceptions.UNAVAILABLE, exceptions.INTERNAL, exceptions.DEADLINE_EXCEEDED, exceptions.ABORTED}
)


def _error_body(exc: Any) -> dict[str, Any]:
    response = getattr(exc, "http_response", None)
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _fcm_error_code(error: Mapping[str, Any]) -> str | None:
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            return str(code) if code else None
    return None


def _names_the_token(error: Mapping[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token rather than the payload."""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == _BAD_REQUEST_TYPE:
            for violation in detail.get("fieldViolations") or []:
                if isinstance(violation, dict) and violation.get("field") in ("message.token", "message.fid"):
                    return True
    return "registration token" in str(error.get("message", "")).lower()


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "http_response", None)
    if response is None:
        return None
    return parse_retry_after(response.headers.get("Retry-After"))


def provider_error(exc: BaseException) -> ProviderError:
    """The one place where firebase-admin, google-auth and httpx exceptions become provider errors."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, exceptions.UnknownError) and isinstance(exc.cause, GoogleAuthError | httpx.HTTPError):
        # send_each_async wraps whatever escapes its per-message handling (a token refresh
        # failing inside the httpx auth flow) into one UnknownError for the whole batch.
        return provider_error(exc.cause)
    if isinstance(exc, exceptions.FirebaseError) and isinstance(exc.cause, httpx.TransportError):
        # No answer at all (refused, reset, timed out): firebase-admin calls these UNAVAILABLE,
        # DEADLINE_EXCEEDED or UNKNOWN; they are one thing here, as in the other providers.
        return TransientError(f"fcm: connection failed: {type(exc.cause).__name__}: {exc.cause}", code="connection")
    if isinstance(exc, exceptions.FirebaseError):
        error = _error_body(exc)
        fcm_code = _fcm_error_code(error) or str(exc.code)
        message = f"fcm: {fcm_code}: {exc}"
        if isinstance(exc, messaging.UnregisteredError | messaging.SenderIdMismatchError):
            return PermanentError(message, code=fcm_code, remove_device=True)
        if isinstance(exc, messaging.QuotaExceededError) or exc.code == exceptions.RESOURCE_EXHAUSTED:
            return RateLimited(message, retry_after_s=_retry_after(exc), code=fcm_code)
        if exc.code == exceptions.INVALID_ARGUMENT:
            return PermanentError(message, code=fcm_code, remove_device=_names_the_token(error))
        if exc.code in _TRANSIENT_CODES:
            return TransientError(message, retry_after_s=_retry_after(exc), code=fcm_code)
        if exc.code == exceptions.UNKNOWN:
            response = exc.http_response
            if response is not None and 400 <= response.status_code < 500:
                return PermanentError(message, code=f"HTTP_{response.status_code}")
            return TransientError(message, code=fcm_code)
        # UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND (project), THIRD_PARTY_AUTH_ERROR, ...
        return PermanentError(message, code=fcm_code)
    if isinstance(exc, RefreshError):
        if exc.retryable:
            return TransientError(f"fcm: token refresh failed: {exc}", code="token_refresh")
        return PermanentError(f"fcm: the service account was refused: {exc}", code="credentials")
    if isinstance(exc, TransportError | httpx.HTTPError | TimeoutError | OSError):
        return TransientError(f"fcm: connection failed: {type(exc).__name__}: {exc}", code="connection")
    if isinstance(exc, ValueError | TypeError):
        # firebase-admin validates a message while encoding it (topic names, data types, ...).
        return PermanentError(f"fcm: invalid message: {exc}", code="INVALID_MESSAGE")
    return TransientError(f"fcm: {type(exc).__name__}: {exc}", code="unknown")


def data_strings(data: Mapping[Any, Any]) -> dict[str, str]:
    """FCM data with every value a string: strings as they are, anything else as compact JSON."""
    return {
        str(key): value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        for key, value in data.items()
    }


def build_message(envelope: Envelope, device_id_field: str = "token") -> Any:
    """The firebase-admin Message for one push envelope."""
    parts = envelope.parts
    data = parts.get("data") or {}
    if not isinstance(data, Mapping):
        raise ValueError("the push part 'data' must be a mapping")
    title, body = parts.get("title"), parts.get("body")
    notification = None
    if title or body:
        notification = messaging.Notification(
            title=str(title) if title else None,
            body=str(body) if body else None,
        )
    address = envelope.address
    if address.startswith(TOPIC_PREFIX):
        return messaging.Message(topic=address[len(TOPIC_PREFIX) :], notification=notification, data=data_strings(data))
    message = messaging.Message(notification=notification, data=data_strings(data))
    # Message(token=...) warns that tokens are deprecated in favour of Firebase installation IDs,
    # but registration tokens are what apps hold today and the v1 API still takes them; the
    # attribute is the same one the constructor would set.
    setattr(message, device_id_field, address)
    return message


class _FcmService(messaging._MessagingService):  # type: ignore[misc]
    """firebase-admin's FCM v1 sender with a chosen endpoint and no retries (see the module docstring)."""

    _async_client: Any

    def __init__(self, app: Any, *, base_url: str, timeout_s: float) -> None:
        super().__init__(app)
        self._fcm_url = f"{base_url}/v1/projects/{self._project_id}/messages:send"
        self._unused_async_client = self._async_client
        self._async_client = _http_client.HttpxAsyncClient(
            credential=self._credential, timeout=timeout_s, retry_config=HttpxRetry(max_retries=0)
        )

    @property
    def project_id(self) -> str:
        return str(self._project_id)

    async def aclose(self) -> None:
        await self._async_client.aclose()
        await self._unused_async_client.aclose()
        self._client.close()


class FcmProvider:
    """Sends push envelopes through FCM; batches of up to 500 with `send_batch`."""

    capabilities = Capabilities(channels=("push",), max_payload_bytes=4096, batch_size=BATCH_SIZE)
    idempotent = False

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        settings = context.settings
        self._prefix = f"providers.{self.name}"
        credentials_path = settings.get("credentials") or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if not credentials_path:
            raise ConfigError(
                "no service-account key file (or GOOGLE_APPLICATION_CREDENTIALS)", key=f"{self._prefix}.credentials"
            )
        self.credentials_path = context.base_dir / Path(str(credentials_path)).expanduser()
        self.project_id = str(settings.get("project_id") or "") or None
        self.app_name = str(settings.get("app_name") or f"notifyctl-{self.name}")
        self.base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.device_id_field = str(settings.get("device_id_field") or "token")
        if self.device_id_field not in DEVICE_ID_FIELDS:
            raise ConfigError(
                f"device_id_field must be one of {', '.join(DEVICE_ID_FIELDS)}", key=f"{self._prefix}.device_id_field"
            )
        try:
            self.timeout_s = float(settings.get("timeout_s", DEFAULT_TIMEOUT_S))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"timeout_s must be a number: {exc}", key=f"{self._prefix}.timeout_s") from exc
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s must be positive", key=f"{self._prefix}.timeout_s")
        self._app: Any = None
        self._service: _FcmService | None = None
        self._credential: Any = None
        self._auth_request: AuthRequest | None = None
        self._token_lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            certificate = credentials.Certificate(str(self.credentials_path))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot use the service-account key {self.credentials_path}: {exc}", key=f"{self._prefix}.credentials"
            ) from exc
        options: dict[str, Any] = {"httpTimeout": self.timeout_s}
        if self.project_id:
            options["projectId"] = self.project_id
        try:
            app = firebase_admin.initialize_app(certificate, options, name=self.app_name)
        except ValueError as exc:
            raise ConfigError(f"firebase app name in use: {exc}", key=f"{self._prefix}.app_name") from exc
        try:
            self._service = _FcmService(app, base_url=self.base_url, timeout_s=self.timeout_s)
        except ValueError as exc:
            firebase_admin.delete_app(app)
            raise ConfigError(f"no FCM project id: {exc}", key=f"{self._prefix}.project_id") from exc
        self._app = app
        self._credential = certificate.get_credential()
        self._auth_request = AuthRequest()

    async def close(self) -> None:
        if self._service is not None:
            await self._service.aclose()
        if self._app is not None:
            firebase_admin.delete_app(self._app)
        if self._auth_request is not None:
            self._auth_request.session.close()
        self._service = self._app = self._credential = self._auth_request = None

    async def send(self, envelope: Envelope) -> SendResult:
        (outcome,) = await self.send_batch([envelope])
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    async def send_batch(self, envelopes: list[Envelope]) -> list[SendResult | ProviderError]:
        """One outcome per envelope, in order: a SendResult or the error for that message."""
        outcomes: list[SendResult | ProviderError] = []
        for start in range(0, len(envelopes), BATCH_SIZE):
            outcomes.extend(await self._send_chunk(envelopes[start : start + BATCH_SIZE]))
        return outcomes

    async def _send_chunk(self, envelopes: list[Envelope]) -> list[SendResult | ProviderError]:
        service = self._service
        if service is None:
            raise RuntimeError(f"provider '{self.name}' is not open")
        outcomes: dict[int, SendResult | ProviderError] = {}
        messages: list[Any] = []
        positions: list[int] = []
        for index, envelope in enumerate(envelopes):
            try:
                message = build_message(envelope, self.device_id_field)
                # The SDK encodes the whole batch up front and one bad message would fail them all.
                service.encode_message(message)
            except (ValueError, TypeError) as exc:
                outcomes[index] = provider_error(exc)
                continue
            messages.append(message)
            positions.append(index)
        if messages:
            try:
                await self._ensure_token()
                batch = await service.send_each_async(messages, dry_run=False)
            except (exceptions.FirebaseError, GoogleAuthError, httpx.HTTPError, OSError, ValueError) as exc:
                for index in positions:
                    outcomes[index] = provider_error(exc)
            else:
                for index, response in zip(positions, batch.responses, strict=True):
                    outcomes[index] = self._outcome(response)
        return [outcomes[index] for index in range(len(envelopes))]

    def _outcome(self, response: Any) -> SendResult | ProviderError:
        if response.success:
            return SendResult(provider=self.name, provider_message_id=str(response.message_id), status_code=200)
        if response.exception is not None:
            return provider_error(response.exception)
        return TransientError("fcm: a 2xx answer without a message name", code="bad_response")

    async def _ensure_token(self) -> None:
        credential = self._credential
        if credential is None or credential.valid:
            return
        async with self._token_lock:
            if not credential.valid:
                await asyncio.to_thread(credential.refresh, self._auth_request)
