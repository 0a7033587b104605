"""Push through Firebase Cloud Messaging's HTTP v1 API, with public APIs only.

One envelope is one `POST {base_url}/v1/projects/{project_id}/messages:send` carrying
`{"message": {...}}`; `send_batch` sends up to 500 of them concurrently and answers per message.
The envelope's address is a device registration token (or Firebase installation id, with
`device_id_field = "fid"`), or `/topics/<name>` for a topic. FCM only accepts string data
values, so other values are sent as compact JSON (`3` → `"3"`, `true` → `"true"`,
`{"a": 1}` → `'{"a":1}'`).

The OAuth 2.0 access token comes from google-auth's service-account credentials (the JWT-bearer
grant, at the key file's own `token_uri`, which is how tests point it at a local fake). google-auth
is synchronous (requests), so the token is fetched in a worker thread, one refresh at a time,
whenever it is missing or about to expire; google-auth itself tries a token request that failed
with a retryable answer (5xx, 429) up to three times in that thread, which costs time but cannot
duplicate a message. The messages go through `transports.json_api.JsonApi` at the configurable
`base_url`, with no retries: a 401 drops the cached access token and is a TransientError, so the
pipeline's next attempt, recorded like any other, fetches a new one.

What an answer means is decided in `error_for_answer` and what an exception means in
`provider_error`, side by side below; connection failures and timeouts are mapped by the
transport: not sent before the request was written (TransientError `connect_timeout` /
`connection`), unknown after (OutcomeUnknown `timeout_after_send` / `reset_after_send` /
`bad_response`, as is a 2xx without a message name). FCM v1 has no idempotency key, so an unknown
outcome is held, not sent again (README, "Guarantees"). A failed token fetch sent nothing to FCM.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.auth.transport.requests import Request as AuthRequest
from google.oauth2 import service_account

from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.providers.transports.json_api import JsonAnswer, JsonApi
from notifyctl.providers.webhook import parse_retry_after

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_CONNECTIONS = 100
BATCH_SIZE = 500  # as many messages as one provider call sends concurrently
TOPIC_PREFIX = "/topics/"
DEVICE_ID_FIELDS = ("token", "fid")
SCOPES = ("https://www.googleapis.com/auth/firebase.messaging",)
PROJECT_ENV = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")
USER_AGENT = "notifyctl-fcm/0.1"

_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9\-_.~%]+")  # what FCM (and firebase-admin) accept after /topics/
_DEVICE_GONE = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})  # the token will never work again
# SENDER_ID_MISMATCH is also what every token answers when the key and project_id belong to another
# Firebase project than the app's: the pipeline's churn guard tells the two apart (pipeline/churn.py).
_WRONG_PROJECT = "the service-account key or project_id of another Firebase project than the app's"
_TRANSIENT_STATUSES = frozenset({"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED"})
# An error document without a `status` is read from its HTTP status, as Google's clients do.
_STATUS_OF_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# -- from an answer or an exception to a provider error (the one place) ------------------------


def _error_document(body: Any) -> Mapping[str, Any]:
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _fcm_error_code(error: Mapping[str, Any]) -> str | None:
    for detail in error.get("details") or []:
        if isinstance(detail, Mapping) and detail.get("@type") == _FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            return str(code) if code else None
    return None


def _names_the_token(error: Mapping[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token rather than the payload."""
    for detail in error.get("details") or []:
        if isinstance(detail, Mapping) and detail.get("@type") == _BAD_REQUEST_TYPE:
            for violation in detail.get("fieldViolations") or []:
                if isinstance(violation, Mapping) and violation.get("field") in ("message.token", "message.fid"):
                    return True
    return "registration token" in str(error.get("message", "")).lower()


def error_for_answer(answer: JsonAnswer) -> ProviderError:
    """The provider error a non-2xx answer of messages:send means."""
    error = _error_document(answer.body)
    status_name = str(error.get("status") or _STATUS_OF_HTTP.get(answer.status, ""))
    fcm_code = _fcm_error_code(error) or status_name or f"HTTP_{answer.status}"
    message = f"fcm: {fcm_code}: HTTP {answer.status} {error.get('message') or ''}".rstrip()
    retry_after_s = parse_retry_after(answer.headers.get("Retry-After"))
    if fcm_code in _DEVICE_GONE:
        unregistered = fcm_code == "UNREGISTERED"  # routine token churn: settled as skipped
        suspect = None if unregistered else _WRONG_PROJECT
        return PermanentError(
            message, code=fcm_code, remove_device=True, token_gone=unregistered, config_suspect=suspect
        )
    if fcm_code == "QUOTA_EXCEEDED" or status_name == "RESOURCE_EXHAUSTED" or answer.status == 429:
        return RateLimited(message, retry_after_s=retry_after_s, code=fcm_code)
    if status_name in _TRANSIENT_STATUSES or answer.status == 408 or answer.status >= 500:
        return TransientError(message, retry_after_s=retry_after_s, code=fcm_code)
    if fcm_code == "UNAUTHENTICATED":
        # The access token was refused (revoked, or expired early): nothing was sent. The caller
        # drops it, and the next attempt fetches a new one. (A 401 THIRD_PARTY_AUTH_ERROR, a bad
        # APNs or web push key in the Firebase project, is not this: it is permanent, below.)
        return TransientError(message, code=fcm_code)
    if status_name == "INVALID_ARGUMENT":
        return PermanentError(message, code=fcm_code, remove_device=_names_the_token(error))
    # PERMISSION_DENIED, NOT_FOUND (the project), THIRD_PARTY_AUTH_ERROR, any other 4xx.
    return PermanentError(message, code=fcm_code)


def provider_error(exc: Exception) -> ProviderError:
    """What an exception raised while getting the access token means (google-auth, requests)."""
    if isinstance(exc, RefreshError):
        if exc.retryable:
            return TransientError(f"fcm: token refresh failed: {exc}", code="token_refresh")
        return PermanentError(f"fcm: the service account was refused: {exc}", code="credentials")
    if isinstance(exc, TransportError | OSError | TimeoutError):
        return TransientError(f"fcm: connection failed: {type(exc).__name__}: {exc}", code="connection")
    return TransientError(f"fcm: {type(exc).__name__}: {exc}", code="unknown")


# -- the message ---------------------------------------------------------------------------------


def data_strings(data: Mapping[Any, Any]) -> dict[str, str]:
    """FCM data with every value a string: strings as they are, anything else as compact JSON."""
    return {
        str(key): value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        for key, value in data.items()
    }


def _invalid(reason: str) -> PermanentError:
    return PermanentError(f"fcm: invalid message: {reason}", code="INVALID_MESSAGE")


def build_message(envelope: Envelope, device_id_field: str = "token") -> dict[str, Any]:
    """The FCM v1 `message` for one push envelope; PermanentError INVALID_MESSAGE when it cannot be one."""
    parts = envelope.parts
    data = parts.get("data") or {}
    if not isinstance(data, Mapping):
        raise _invalid("the push part 'data' must be a mapping")
    address = envelope.address
    message: dict[str, Any] = {}
    if address.startswith(TOPIC_PREFIX):
        topic = address[len(TOPIC_PREFIX) :]
        if not _TOPIC_NAME.fullmatch(topic):
            raise _invalid(f"malformed topic name {topic!r}")
        message["topic"] = topic
    elif address:
        message[device_id_field] = address
    else:
        raise _invalid("no device token")
    title, body = parts.get("title"), parts.get("body")
    if title or body:
        notification = {"title": str(title) if title else None, "body": str(body) if body else None}
        message["notification"] = {key: value for key, value in notification.items() if value is not None}
    if data:
        message["data"] = data_strings(data)
    return message


# -- the provider ----------------------------------------------------------------------------------


def _positive(settings: Mapping[str, Any], key: str, default: float, prefix: str) -> float:
    try:
        value = float(settings.get(key, default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} must be a number: {exc}", key=f"{prefix}.{key}") from exc
    if value <= 0:
        raise ConfigError(f"{key} must be positive", key=f"{prefix}.{key}")
    return value


class FcmProvider:
    """Sends push envelopes through FCM; up to 500 at once with `send_batch`."""

    capabilities = Capabilities(channels=("push",), max_payload_bytes=4096, batch_size=BATCH_SIZE)

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
        self.base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.device_id_field = str(settings.get("device_id_field") or "token")
        if self.device_id_field not in DEVICE_ID_FIELDS:
            raise ConfigError(
                f"device_id_field must be one of {', '.join(DEVICE_ID_FIELDS)}", key=f"{self._prefix}.device_id_field"
            )
        self.timeout_s = _positive(settings, "timeout_s", DEFAULT_TIMEOUT_S, self._prefix)
        self.connections = int(_positive(settings, "connections", DEFAULT_CONNECTIONS, self._prefix))
        self._credential: Any = None  # google.oauth2.service_account.Credentials
        self._refresh_request: Callable[..., Any] | None = None
        self._auth_request: AuthRequest | None = None
        self._token_lock = asyncio.Lock()
        self._api: JsonApi | None = None
        self._send_path = ""

    def __repr__(self) -> str:
        return f"FcmProvider(name={self.name!r}, base_url={self.base_url!r})"

    async def open(self) -> None:
        try:
            credential = await asyncio.to_thread(
                service_account.Credentials.from_service_account_file, str(self.credentials_path), scopes=SCOPES
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot use the service-account key {self.credentials_path}: {exc}", key=f"{self._prefix}.credentials"
            ) from exc
        project_id = self.project_id or credential.project_id or next(filter(None, map(os.getenv, PROJECT_ENV)), None)
        if not project_id:
            raise ConfigError("no FCM project id in the settings or the key file", key=f"{self._prefix}.project_id")
        self._send_path = f"/v1/projects/{project_id}/messages:send"
        self._credential = credential
        self._auth_request = AuthRequest()
        # google-auth's default is 120 s; a token request gets the same time as a send.
        self._refresh_request = functools.partial(self._auth_request, timeout=self.timeout_s)
        self._api = JsonApi(
            self.base_url,
            label="fcm",
            timeout_s=self.timeout_s,
            connections=self.connections,
            headers={"User-Agent": USER_AGENT},
        )
        await self._api.open()

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.close()
        if self._auth_request is not None:
            self._auth_request.session.close()
        self._credential = self._auth_request = self._refresh_request = None

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
        api = self._api
        if api is None:
            raise RuntimeError(f"provider '{self.name}' is not open")
        outcomes: dict[int, SendResult | ProviderError] = {}
        messages: dict[int, dict[str, Any]] = {}
        for index, envelope in enumerate(envelopes):
            try:
                messages[index] = build_message(envelope, self.device_id_field)
            except PermanentError as exc:  # refused here, alone: the others still go
                outcomes[index] = exc
        if messages:
            try:
                authorization = await self._authorization()
            except ProviderError as exc:
                outcomes.update(dict.fromkeys(messages, exc))
            else:
                answers = await asyncio.gather(
                    *(self._send_one(api, message, authorization) for message in messages.values())
                )
                outcomes.update(zip(messages, answers, strict=True))
        return [outcomes[index] for index in range(len(envelopes))]

    async def _send_one(
        self, api: JsonApi, message: dict[str, Any], authorization: dict[str, str]
    ) -> SendResult | ProviderError:
        try:
            answer = await api.post(self._send_path, {"message": message}, headers=authorization)
        except ProviderError as exc:
            return exc
        if 200 <= answer.status < 300:
            name = answer.body.get("name") if isinstance(answer.body, Mapping) else None
            if not name:
                # FCM took the request, and its answer does not say what became of the message.
                return OutcomeUnknown(f"fcm: HTTP {answer.status} without a message name", code="bad_response")
            return SendResult(provider=self.name, provider_message_id=str(name), status_code=answer.status)
        error = error_for_answer(answer)
        if error.code == "UNAUTHENTICATED":
            self._drop_token(authorization)
        return error

    async def _authorization(self) -> dict[str, str]:
        """The request headers with a valid access token, refreshed in a worker thread when needed."""
        credential = self._credential
        if credential is None:
            raise RuntimeError(f"provider '{self.name}' is not open")
        if not credential.valid:
            async with self._token_lock:
                if not credential.valid:
                    try:
                        await asyncio.to_thread(credential.refresh, self._refresh_request)
                    except (GoogleAuthError, OSError, ValueError) as exc:
                        raise provider_error(exc) from exc
        headers: dict[str, str] = {}
        credential.apply(headers)
        return headers

    def _drop_token(self, authorization: Mapping[str, str]) -> None:
        credential = self._credential
        if credential is not None and authorization.get("authorization") == f"Bearer {credential.token}":
            credential.token = None  # not valid any more: the next call fetches a new one
