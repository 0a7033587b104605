"""Push through Apple's APNs provider API (HTTP/2), with token-based authentication.

One envelope is one `POST {host}/3/device/<token>` on the provider's single HTTP/2 connection;
`send_batch` sends up to BATCH_SIZE of them concurrently, as streams of that connection, and
answers per message. The envelope's address is `apns:<device token>` (addresses.push_address).

The `authorization: bearer <JWT>` is an ES256 token signed with the `.p8` key (`key_id`, issuer
`team_id`), made once and reused until it is `token_refresh_s` old (50 minutes: Apple refuses a
token older than 60 and more than one new token per 20 minutes). A 403 ExpiredProviderToken drops
it: the answer is a TransientError, so the pipeline's next attempt, recorded like any other, signs
a fresh one (with a later `iat`, so it really is another token).

The payload is `{"aps": {"alert": {"title", "body"}}, ...data}` from the push template's parts
title, body and data (a data key `aps` is refused: Apple's dictionary is ours). Without title and
body it is a background push (`content-available: 1`, apns-push-type background, priority 5).
Over 4096 bytes it is refused before sending (PermanentError payload_too_large). `apns-id` is a
UUID derived from the delivery's message id, so every attempt of one delivery carries the same id;
it is not a dedupe key (APNs has none): an unknown outcome is held, not sent again.

What an answer means is decided in `error_for_answer`, in one place; what never became an answer
is mapped by the transport (transports/http2.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import orjson

from notifyctl.addresses import split_push_address
from notifyctl.errors import ConfigError, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.providers.transports.http2 import Http2Api
from notifyctl.providers.transports.json_api import JsonAnswer
from notifyctl.providers.webhook import parse_retry_after

PRODUCTION_HOST = "https://api.push.apple.com"
SANDBOX_HOST = "https://api.sandbox.push.apple.com"
MAX_PAYLOAD_BYTES = 4096
BATCH_SIZE = 500
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_TOKEN_REFRESH_S = 50 * 60.0  # Apple refuses a provider token older than 60 minutes
DEFAULT_TTL_S = 86400
APNS_ID_NAMESPACE = uuid.UUID("6f1d5c2e-8a3b-5e4f-9c1d-2b7a0e3f4d5c")  # apns-id = uuid5(this, message id)
USER_AGENT = "notifyctl-apns/0.1"

# 400 BadDeviceToken is also what every token answers when the host is the other environment's
# (a sandbox token sent to production, or the reverse): the churn guard tells the two apart.
_WRONG_ENVIRONMENT = "the other APNs environment's host (sandbox vs production) for the app's tokens"
_WRONG_TOPIC = "a topic (bundle id) other than the app's the tokens were issued for"
_TOKEN_GONE = frozenset({"Unregistered", "ExpiredToken"})  # 410: the app is gone from the device


def apns_id(message_id: str) -> str:
    """The `apns-id` of a delivery: a UUID (the form APNs requires) derived from its message id."""
    return str(uuid.uuid5(APNS_ID_NAMESPACE, message_id))


# -- from an answer to a provider error (the one place) -----------------------------------------


def error_for_answer(status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
    """The provider error a non-200 answer of APNs means; `body` is Apple's `{"reason": ...}`."""
    reason = str(body.get("reason") or "") if isinstance(body, Mapping) else ""
    reason = reason or f"HTTP_{status}"
    message = f"apns: {reason}: HTTP {status}"
    retry_after_s = parse_retry_after(headers.get("retry-after"))
    if status == 410 or reason in _TOKEN_GONE:
        return PermanentError(message, code=reason, remove_device=True, token_gone=True)
    if reason == "BadDeviceToken":
        return PermanentError(
            message, code=reason, remove_device=True, token_gone=True, config_suspect=_WRONG_ENVIRONMENT
        )
    if reason == "DeviceTokenNotForTopic":
        return PermanentError(message, code=reason, remove_device=True, config_suspect=_WRONG_TOPIC)
    if reason == "ExpiredProviderToken":
        return TransientError(message, code=reason)  # a new token, and the next attempt
    if status == 429:
        return RateLimited(message, retry_after_s=retry_after_s, code=reason)
    if status >= 500 or status == 408:
        return TransientError(message, retry_after_s=retry_after_s, code=reason)
    # 413 PayloadTooLarge, 403 InvalidProviderToken / MissingProviderToken, any other 4xx: Apple's reason.
    return PermanentError(message, code=reason)


# -- the message --------------------------------------------------------------------------------


def _invalid(reason: str) -> PermanentError:
    return PermanentError(f"apns: invalid message: {reason}", code="INVALID_MESSAGE")


def build_payload(envelope: Envelope) -> tuple[bytes, bool]:
    """The APNs JSON payload of a push envelope, and whether it is an alert (else a background push)."""
    parts = envelope.parts
    data = parts.get("data") or {}
    if not isinstance(data, Mapping):
        raise _invalid("the push part 'data' must be a mapping")
    if "aps" in data:
        raise _invalid("the data key 'aps' is APNs' own dictionary")
    title, body = parts.get("title"), parts.get("body")
    alert = {key: str(value) for key, value in (("title", title), ("body", body)) if value}
    aps: dict[str, Any] = {"alert": alert} if alert else {"content-available": 1}
    payload = orjson.dumps({"aps": aps, **data}, default=str, option=orjson.OPT_NON_STR_KEYS)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PermanentError(
            f"apns: the payload is {len(payload)} bytes, over APNs' {MAX_PAYLOAD_BYTES}", code="payload_too_large"
        )
    return payload, bool(alert)


# -- the provider token ---------------------------------------------------------------------------


class ProviderToken:
    """The ES256 JWT APNs takes as `authorization: bearer`, made once and reused until `refresh_s` old."""

    def __init__(self, key_pem: bytes, key_id: str, team_id: str, refresh_s: float) -> None:
        self.key_pem = key_pem
        self.key_id = key_id
        self.team_id = team_id
        self.refresh_s = refresh_s
        self._token: str | None = None
        self._issued_at = 0

    def current(self) -> str:
        now = int(time.time())
        if self._token is None or now - self._issued_at >= self.refresh_s:
            # Strictly later than the last one: a token dropped for ExpiredProviderToken must not come back.
            issued_at = max(now, self._issued_at + 1)
            self._token = jwt.encode(
                {"iss": self.team_id, "iat": issued_at},
                self.key_pem,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._issued_at = issued_at
        return self._token

    def drop(self, token: str) -> None:
        """Forget `token` (Apple said it expired); the next `current()` signs a new one."""
        if self._token == token:
            self._token = None


# -- the provider ----------------------------------------------------------------------------------


def _setting(settings: Mapping[str, Any], key: str, prefix: str) -> str:
    value = settings.get(key)
    if not value:
        raise ConfigError(f"the APNs provider needs {key}", key=f"{prefix}.{key}")
    return str(value)


def _number(settings: Mapping[str, Any], key: str, default: float, prefix: str) -> float:
    try:
        value = float(settings.get(key, default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} must be a number: {exc}", key=f"{prefix}.{key}") from exc
    if value < 0:
        raise ConfigError(f"{key} must not be negative", key=f"{prefix}.{key}")
    return value


class ApnsProvider:
    """Sends push envelopes to APNs; up to BATCH_SIZE at once with `send_batch`, as HTTP/2 streams."""

    capabilities = Capabilities(channels=("push",), max_payload_bytes=MAX_PAYLOAD_BYTES, batch_size=BATCH_SIZE)

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        settings = context.settings
        prefix = self._prefix = f"providers.{self.name}"
        self.key_file = context.base_dir / Path(_setting(settings, "key_file", prefix)).expanduser()
        self.key_id = _setting(settings, "key_id", prefix)
        self.team_id = _setting(settings, "team_id", prefix)
        self.topic = _setting(settings, "topic", prefix)
        host = settings.get("host") or (SANDBOX_HOST if settings.get("sandbox") else PRODUCTION_HOST)
        self.host = str(host).rstrip("/")
        if not self.host.startswith("https://"):
            raise ConfigError("host must be an https:// URL (APNs is HTTP/2 over TLS)", key=f"{prefix}.host")
        ca_file = settings.get("ca_file")
        self.ca_file = context.base_dir / Path(str(ca_file)).expanduser() if ca_file else None
        self.timeout_s = _number(settings, "timeout_s", DEFAULT_TIMEOUT_S, prefix) or DEFAULT_TIMEOUT_S
        self.token_refresh_s = _number(settings, "token_refresh_s", DEFAULT_TOKEN_REFRESH_S, prefix)
        if not 0 < self.token_refresh_s < 3600:
            raise ConfigError("token_refresh_s must be between 0 and 3600", key=f"{prefix}.token_refresh_s")
        self.ttl_s = int(_number(settings, "ttl_s", DEFAULT_TTL_S, prefix))
        self.priority = int(_number(settings, "priority", 10, prefix))
        if self.priority not in (1, 5, 10):
            raise ConfigError("priority must be 10, 5 or 1", key=f"{prefix}.priority")
        self._token: ProviderToken | None = None
        self._api: Http2Api | None = None

    def __repr__(self) -> str:
        return f"ApnsProvider(name={self.name!r}, host={self.host!r})"

    async def open(self) -> None:
        try:
            key_pem = await asyncio.to_thread(self.key_file.read_bytes)
            token = ProviderToken(key_pem, self.key_id, self.team_id, self.token_refresh_s)
            token.current()  # a key that cannot sign ES256 is a configuration error, found now
        except (OSError, ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigError(
                f"cannot use the APNs key {self.key_file}: {exc}", key=f"{self._prefix}.key_file"
            ) from exc
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ConfigError(f"no CA file {self.ca_file}", key=f"{self._prefix}.ca_file")
        self._token = token
        self._api = Http2Api(
            self.host, label="apns", timeout_s=self.timeout_s, ca_file=self.ca_file, headers={"user-agent": USER_AGENT}
        )
        await self._api.open()

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.close()
        self._token = None

    async def send(self, envelope: Envelope) -> SendResult:
        (outcome,) = await self.send_batch([envelope])
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    async def send_batch(self, envelopes: list[Envelope]) -> list[SendResult | ProviderError]:
        """One outcome per envelope, in order: a SendResult or the error for that message."""
        outcomes: list[SendResult | ProviderError] = []
        for start in range(0, len(envelopes), BATCH_SIZE):
            chunk = envelopes[start : start + BATCH_SIZE]
            outcomes.extend(await asyncio.gather(*(self._send_one(envelope) for envelope in chunk)))
        return outcomes

    def _headers(self, envelope: Envelope, alert: bool, bearer: str) -> dict[str, str]:
        headers = {
            "authorization": f"bearer {bearer}",
            "apns-topic": self.topic,
            "apns-push-type": "alert" if alert else "background",
            "apns-priority": str(self.priority if alert else 5),  # Apple refuses 10 for background
            "apns-expiration": str(int(time.time()) + self.ttl_s if self.ttl_s else 0),
            "apns-id": apns_id(envelope.message_id),
            "content-type": "application/json",
        }
        data = envelope.parts.get("data")
        collapse_id = data.get("collapse_id") if isinstance(data, Mapping) else None
        if collapse_id:
            headers["apns-collapse-id"] = str(collapse_id)[:64]
        return headers

    async def _send_one(self, envelope: Envelope) -> SendResult | ProviderError:
        api, token = self._api, self._token
        if api is None or token is None:
            raise RuntimeError(f"provider '{self.name}' is not open")
        service, device_token = split_push_address(envelope.address)
        if service != "apns" or not device_token:
            return _invalid(f"{envelope.address!r} is not an APNs device token (apns:<token>)")
        try:
            payload, alert = build_payload(envelope)
        except PermanentError as exc:
            return exc
        bearer = token.current()
        try:
            answer: JsonAnswer = await api.post(
                f"/3/device/{device_token}", payload, self._headers(envelope, alert, bearer)
            )
        except ProviderError as exc:
            return exc
        if answer.status == 200:
            message_id = answer.headers.get("apns-id") or apns_id(envelope.message_id)
            return SendResult(provider=self.name, provider_message_id=message_id, status_code=200)
        error = error_for_answer(answer.status, answer.body, answer.headers)
        if error.code == "ExpiredProviderToken":
            token.drop(bearer)
        return error
