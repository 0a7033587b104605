"""Masking personal data and scrubbing secrets from anything that leaves the process as text.

Addresses are masked so that an operator can recognise them but not contact anyone
(`a***@example.com`, `+1******2671`). Secrets are replaced with `***` wherever they occur: known
shapes (Standard Webhooks secrets, Authorization values, AWS access keys, Twilio auth tokens
after an account SID, PEM private keys) and, because a password has no shape, every configured
secret value by exact match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from notifyctl.settings import Settings

MASK = "***"
# Shorter values would turn common words into `***` everywhere; nobody uses such a secret.
MIN_SECRET_CHARS = 6
_SECRET_KEY_HINTS = ("token", "secret", "password", "key")
PROVIDER_SECRET_ENV = frozenset(
    {"TWILIO_AUTH_TOKEN", "TWILIO_API_SECRET", "POSTMARK_SERVER_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
)

_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL),
    re.compile(r"whsec_[A-Za-z0-9+/=_-]+"),
    re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(r"\bnk_[A-Za-z0-9_-]{20,}"),  # notifyctl's own API keys (store/keys.py)
)
# The auth token sits next to its account SID in URLs, "sid:token" pairs and config dumps.
_TWILIO_TOKEN = re.compile(
    r"(\bAC[0-9a-fA-F]{32}\b.{1,40}?|auth_?token[\"']?\s*[:=]\s*[\"']?)\b[0-9a-fA-F]{32}\b", re.IGNORECASE
)
_AUTH_SCHEME = re.compile(r"^(Bearer|Basic)\b", re.IGNORECASE)


def mask_email(address: str) -> str:
    """a***@example.com: the first character of the local part and the domain."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    """+1******2671: the country prefix and the last four digits."""
    if len(number) <= 6:
        return MASK
    return number[:2] + "*" * (len(number) - 6) + number[-4:]


def mask_address(address: str | None) -> str:
    """Any channel's address, masked: emails and phones as above, URLs to their host, long tokens cut short."""
    if not address:
        return ""
    if "://" in address:
        # The host says which customer; the path and query may carry their tokens.
        parts = urlsplit(address)
        return f"{parts.scheme}://{parts.hostname or ''}/…"
    if "@" in address:
        return mask_email(address)
    if address.startswith("+") and len(address) > 6:
        return mask_phone(address)
    if len(address) > 12:
        return address[:8] + "…"
    return address


def _auth_value(match: re.Match[str]) -> str:
    scheme = _AUTH_SCHEME.match(match.group(0))
    return f"{scheme.group(1)} {MASK}" if scheme else MASK


def redact_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret shape and every value in `secrets` replaced by `***`."""
    if not text:
        return text
    # Longest first, so that a secret containing another one is removed whole.
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(_auth_value, text)
    return _TWILIO_TOKEN.sub(lambda m: m.group(1) + MASK, text)


class Scrubber:
    """`redact_secrets` with the configured secrets fixed once (one compiled pattern), plus the few
    secrets of one message (a webhook's signing secrets) given per call. Built once per engine or
    worker: it runs on every failed attempt's text before that text is stored."""

    __slots__ = ("_configured",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first: the regex tries alternatives in order, so a secret containing another goes whole.
        values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._configured = re.compile("|".join(map(re.escape, values))) if values else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Scrubber:
        """Every secret the configuration holds (`configured_secrets`)."""
        return cls(configured_secrets(settings))

    def __call__(self, text: str, extra: Iterable[str] = ()) -> str:
        if not text:
            return text
        if self._configured is not None:
            text = self._configured.sub(MASK, text)
        return redact_secrets(text, extra)


def is_secret_key(name: str) -> bool:
    """Setting names whose values are secrets: *token*, *secret*, *password*, *key*."""
    lowered = name.lower()
    return any(hint in lowered for hint in _SECRET_KEY_HINTS)


def secret_values(options: Mapping[str, Any]) -> list[str]:
    """String values under secret-looking keys, at any depth of a settings mapping."""
    found: list[str] = []
    for key, value in options.items():
        if isinstance(value, Mapping):
            found.extend(secret_values(value))
        elif isinstance(value, str) and is_secret_key(str(key)) and value:
            found.append(value)
    return found


def configured_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the configuration holds: provider options named like secrets, the unsubscribe
    secret, NOTIFYCTL_* overrides named like secrets and the providers' own environment variables."""
    import os

    env = os.environ if environ is None else environ
    found: list[str] = [settings.unsubscribe_secret or "", *settings.unsubscribe_previous_secrets]
    for provider in settings.providers.values():
        found.extend(secret_values(provider.options))
    for name, value in env.items():
        if name in PROVIDER_SECRET_ENV or (name.startswith("NOTIFYCTL_") and is_secret_key(name)):
            found.append(value)
    return [s for s in dict.fromkeys(found) if len(s) >= MIN_SECRET_CHARS]
