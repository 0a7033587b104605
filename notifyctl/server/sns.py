"""Amazon SNS HTTP(S) message verification.

SNS signs a canonical string of the message's fields ("Key\\nValue\\n" for each key in a fixed
order) with SHA1withRSA (SignatureVersion 1) or SHA256withRSA (SignatureVersion 2). The
certificate comes from `SigningCertURL`, which is trusted only when its host matches a configured
pattern (`sns.*.amazonaws.com` by default, where `*` is exactly one DNS label: a bucket host such
as `sns.x.s3.amazonaws.com` does not match) over HTTPS, so a forger cannot point us at their own
certificate. The same host rule guards `SubscribeURL` before we GET it.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
MAX_CERT_BYTES = 64 * 1024
MAX_CACHED_CERTS = 32


class SnsError(Exception):
    """A message that cannot be proven to come from SNS; the text says why (no secrets in it)."""


def canonical_string(message: dict[str, Any]) -> bytes:
    keys = NOTIFICATION_KEYS if message.get("Type") == "Notification" else SUBSCRIPTION_KEYS
    parts: list[str] = []
    for key in keys:
        if key in message and message[key] is not None:
            parts.append(f"{key}\n{message[key]}\n")
    return "".join(parts).encode()


def host_matches(host: str, pattern: str) -> bool:
    """`*` stands for exactly one DNS label (letters, digits, '-')."""
    host_labels = host.lower().rstrip(".").split(".")
    pattern_labels = pattern.lower().rstrip(".").split(".")
    if len(host_labels) != len(pattern_labels):
        return False
    for label, wanted in zip(host_labels, pattern_labels, strict=True):
        if not label or not all(c.isalnum() or c == "-" for c in label):
            return False
        if not fnmatch.fnmatchcase(label, wanted):
            return False
    return True


def url_allowed(url: str, patterns: list[str], allow_http: bool) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return False
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return False
    if parts.username or parts.password:
        return False
    return any(host_matches(host, pattern) for pattern in patterns)


def check_fields(message: dict[str, Any]) -> None:
    kind = message.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SnsError(f"unknown SNS message type {kind!r}")
    required = ["MessageId", "Timestamp", "TopicArn", "Message", "Signature", "SigningCertURL", "SignatureVersion"]
    if kind != "Notification":
        required += ["SubscribeURL", "Token"]
    missing = [key for key in required if not isinstance(message.get(key), str)]
    if missing:
        raise SnsError(f"SNS message lacks {', '.join(missing)}")


def verify_with_certificate(message: dict[str, Any], pem: bytes, now: datetime | None = None) -> None:
    """Raise SnsError unless `pem`'s key signed the message."""
    version = message.get("SignatureVersion")
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise SnsError(f"unsupported SignatureVersion {version!r}")
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SnsError("unreadable signing certificate or signature") from exc
    moment = now or datetime.now(UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise SnsError("signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsError("signing certificate has no RSA key")
    try:
        key.verify(signature, canonical_string(message), padding.PKCS1v15(), algorithm)
    except InvalidSignature as exc:
        raise SnsError("bad SNS signature") from exc


async def fetch_certificate(
    session: aiohttp.ClientSession, url: str, cache: dict[str, bytes], timeout_s: float
) -> bytes:
    if url in cache:
        return cache[url]
    try:
        async with session.get(url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                raise SnsError(f"signing certificate answered HTTP {resp.status}")
            pem = await resp.content.read(MAX_CERT_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SnsError(f"cannot fetch the signing certificate: {type(exc).__name__}") from exc
    if len(pem) > MAX_CERT_BYTES:
        raise SnsError("signing certificate is too large")
    if len(cache) >= MAX_CACHED_CERTS:
        cache.pop(next(iter(cache)))
    cache[url] = pem
    return pem


async def verify_message(
    message: dict[str, Any],
    session: aiohttp.ClientSession,
    cache: dict[str, bytes],
    *,
    cert_hosts: list[str],
    allow_http: bool,
    timeout_s: float,
) -> None:
    """Raise SnsError unless the message is complete and signed by a trusted SNS certificate."""
    check_fields(message)
    cert_url = str(message["SigningCertURL"])
    if not url_allowed(cert_url, cert_hosts, allow_http) or not urlsplit(cert_url).path.endswith(".pem"):
        raise SnsError("SigningCertURL is not a trusted SNS location")
    pem = await fetch_certificate(session, cert_url, cache, timeout_s)
    verify_with_certificate(message, pem)
