"""The provider boundary: one method moves one message and says what happened.

A provider never sleeps, never retries, never logs-and-continues and holds no global state.
It returns a SendResult or raises RateLimited / TransientError / PermanentError
(notifyctl.errors). Rate limits, retries, dedupe, policy and audit are pipeline stages.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from notifyctl.errors import ConfigError
from notifyctl.models import Envelope, SendResult


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do, declared as data; every field is enforced or read outside the provider.

    channels, max_body_chars, max_payload_bytes and supports_html are checked per envelope right
    before the call (`providers.capabilities.check`); batch_size is how many deliveries the engine
    gives one `send_batch` call; idempotent decides whether an in-doubt delivery is re-sent;
    per_endpoint makes a Retry-After hold back one endpoint's deliveries (the Sender) rather than
    slow the provider account's bucket.
    """

    channels: tuple[str, ...]
    max_body_chars: int | None = None  # the body text (SMS text, push body), in characters
    max_payload_bytes: int | None = None  # the rendered parts as compact UTF-8 JSON
    batch_size: int = 1  # > 1: the provider has `send_batch` (BatchProvider)
    supports_html: bool = False  # without it the HTML part is dropped and the text part sent
    idempotent: bool = False  # the receiver dedupes a re-send (webhook-id, one file or row per message)
    per_endpoint: bool = False  # every address is its own receiver (a webhook endpoint): see endpoint_of


def endpoint_of(address: str) -> str:
    """The receiver an address belongs to, for per-endpoint backpressure: scheme, host and port."""
    scheme, _, rest = address.partition("://")
    return f"{scheme.lower()}://{rest.split('/', 1)[0].split('?', 1)[0].lower()}"


@dataclass
class ProviderContext:
    """What a provider may need from its surroundings; all network targets are injectable."""

    name: str
    settings: dict[str, Any]
    db_path: Path
    base_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    name: str
    capabilities: Capabilities

    async def open(self) -> None:
        """Create sessions/connections; called once before the first send."""

    async def close(self) -> None:
        """Release sessions/connections."""

    async def send(self, envelope: Envelope) -> SendResult:
        """Move one message, or raise RateLimited / TransientError / PermanentError."""


@runtime_checkable
class BatchProvider(Provider, Protocol):
    """A provider with a batch API (capabilities.batch_size > 1): one result or error per envelope."""

    async def send_batch(self, envelopes: list[Envelope]) -> list[SendResult | Exception]: ...


# type name -> "module:Class"; modules are imported only when a provider of that type is used,
# so `notifyctl --help` never pays for aioboto3, twilio or firebase-admin.
PROVIDER_TYPES: dict[str, str] = {
    "outbox": "notifyctl.providers.email.outbox:OutboxProvider",
    "inapp": "notifyctl.providers.inapp:InAppProvider",
    "webhook": "notifyctl.providers.webhook:WebhookProvider",
    "ses": "notifyctl.providers.email.ses:SesProvider",
    "smtp": "notifyctl.providers.email.smtp:SmtpProvider",
    "postmark": "notifyctl.providers.email.postmark:PostmarkProvider",
    "twilio": "notifyctl.providers.twilio:TwilioProvider",
    "fcm": "notifyctl.providers.fcm:FcmProvider",
    "apns": "notifyctl.providers.apns:ApnsProvider",
}


def provider_class(type_name: str) -> Any:
    """The class implementing a provider type, imported on first use."""
    target = PROVIDER_TYPES.get(type_name)
    if target is None:
        known = ", ".join(sorted(PROVIDER_TYPES))
        raise ConfigError(f"unknown provider type '{type_name}' (known: {known})", key="type")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"provider type '{type_name}' is not available: {exc}", key="type") from exc
    return getattr(module, class_name)


def build_provider(type_name: str, context: ProviderContext) -> Provider:
    """Instantiate a provider of `type_name` for `context`."""
    cls = provider_class(type_name)
    provider: Provider = cls(context)
    return provider
