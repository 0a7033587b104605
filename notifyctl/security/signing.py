"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

A message is signed as `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")) where the
key is the base64 part of a `whsec_` secret. During key rotation one header carries several
space-separated signatures, one per secret, and a receiver accepts any of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


@lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; raises ValueError when it is not valid base64.

    Cached: every POST to an endpoint signs with the same few secrets (errors are not cached)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    # Some issuers drop the base64 padding; the official libraries accept that, so do we.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError("webhook secret is not valid base64") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    # Not hmac.digest(): its one-shot C call always releases the GIL, and a thread that gives the GIL
    # up waits for it behind a busy thread (the planner) for up to the switch interval, per message.
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of `body` sent as message `msg_id` at `timestamp`."""
    digest = _digest(secret_key(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated (key rotation)."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when `headers` carry a valid, fresh signature of `body` under `secret`."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp_text and signatures):
        return False
    try:
        timestamp = int(timestamp_text)
        key = secret_key(secret)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _digest(key, msg_id, timestamp, body)
    for versioned in signatures.split():
        version, _, encoded = versioned.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, candidate):
            return True
    return False


# Base32 (RFC 4648, lower case) two characters at a time: 10 bits per table lookup.
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = [first + second for first in _B32 for second in _B32]
_ID_SHIFTS = range(120, -1, -10)  # 130 bits = 26 characters, most significant first


def webhook_id(idempotency_key: str) -> str:
    """A `webhook-id` derived from the idempotency key: `msg_` + 26 base32 characters, never a `.`:
    the first 26 characters of the lower-cased base32 of its SHA-256 (130 bits), computed from an
    integer because `base64.b32encode` is pure Python and was most of the planner's cost per row."""
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    bits = int.from_bytes(digest[:17], "big") >> 6  # the first 130 of 136 bits
    return "msg_" + "".join([_B32_PAIRS[(bits >> shift) & 1023] for shift in _ID_SHIFTS])
