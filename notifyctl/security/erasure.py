"""Keyed hashing for the right to erasure: what a forgotten user's addresses and ids become.

A forgotten user's addresses stay on the suppression list only as keyed hashes, and the audit
log names them only by keyed labels. The key is an operator secret (derived from the
installation's secret, notifyctl/security/secret.py): without it nobody can test whether a given
address is in the hashed list.
"""

from __future__ import annotations

import hashlib
import hmac

ERASED_PREFIX = "erased:"


def erasure_key(secret: str) -> bytes:
    """The hashing key, derived from the installation's secret (so that it is one secret less to
    manage) but domain-separated from it: an unsubscribe token never equals an erased address's hash."""
    return hmac.new(secret.encode(), b"notifyctl-erasure-v1", hashlib.sha256).digest()


def keyed_hash(value: str, key: bytes) -> str:
    """HMAC-SHA256 of `value` under `key`, hex."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def address_hash(channel: str, normalized_address: str, key: bytes) -> str:
    """The suppression-list form of an address: its channel is part of what is hashed."""
    return keyed_hash(f"{channel}\x1f{normalized_address}", key)


def erased_label(value: str, key: bytes) -> str:
    """What replaces a user id or an address in the audit log: `erased:` + 16 hex digits."""
    return ERASED_PREFIX + keyed_hash(value, key)[:16]
