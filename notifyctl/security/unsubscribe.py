"""Signed unsubscribe tokens (RFC 8058 one-click links): unforgeable, carry user, channel, category."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, user_id: str, channel: str, category: str) -> str:
    payload = _b64(orjson.dumps({"u": user_id, "c": channel, "k": category}))
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def read_token(secrets: list[str], token: str) -> tuple[str, str, str] | None:
    """(user_id, channel, category) for a token signed with one of `secrets` (the current one and
    those still in their grace period), None for a forged or altered one."""
    try:
        payload, mac = token.split(".", 1)
        given = _unb64(mac)
        if not any(
            hmac.compare_digest(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest(), given)
            for secret in secrets
        ):
            return None
        fields = orjson.loads(_unb64(payload))
        return str(fields["u"]), str(fields["c"]), str(fields["k"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


def unsubscribe_url(public_url: str, secret: str, user_id: str, channel: str, category: str) -> str:
    return f"{public_url.rstrip('/')}/u/{make_token(secret, user_id, channel, category)}"
