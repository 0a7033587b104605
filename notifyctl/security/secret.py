"""The installation's secret, and the secrets it replaced: which one signs, which ones still verify.

One secret signs one-click unsubscribe links (security/unsubscribe.py) and keys the erasure hashes
(security/erasure.py). Where it comes from and how it is kept is notifyctl/store/secrets.py.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from notifyctl.security.erasure import erasure_key


def fingerprint(secret: str) -> str:
    """What the database keeps to recognise a configured secret: one-way, and domain-separated
    from the erasure key and the link signatures."""
    return hmac.new(secret.encode(), b"notifyctl-secret-fingerprint-v1", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class InstallationSecret:
    """The current secret and the older ones.

    `older`: secrets the database kept (made here, or an earlier release's default), each with the
    moment it stopped signing; their links verify for the grace period. `fallbacks`: replaced
    configured secrets the configuration still lists (`unsubscribe_previous_secrets`); their links
    verify as long as they are listed. `retired_keys`: erasure keys of replaced configured secrets,
    which the database kept instead of the secrets themselves.
    """

    current: str
    older: tuple[tuple[str, datetime], ...] = ()
    fallbacks: tuple[str, ...] = ()
    retired_keys: tuple[bytes, ...] = field(default=(), repr=False)
    erasure_keys: tuple[bytes, ...] = field(init=False, repr=False)  # the current one's first

    def __post_init__(self) -> None:
        keys = [
            erasure_key(self.current),
            *(erasure_key(secret) for secret, _ in self.older),
            *(erasure_key(secret) for secret in self.fallbacks),
            *self.retired_keys,
        ]
        object.__setattr__(self, "erasure_keys", tuple(dict.fromkeys(keys)))

    def __repr__(self) -> str:
        return f"InstallationSecret(<{len(self.erasure_keys)} keys>)"

    @property
    def erasure_key(self) -> bytes:
        """What new erasure hashes are keyed with."""
        return self.erasure_keys[0]

    def link_secrets(self, now: datetime, grace_days: float) -> list[str]:
        """What an unsubscribe link may be signed with: the current secret, those replaced less
        than `grace_days` ago (links already sent keep working that long) and the listed fallbacks."""
        grace = timedelta(days=grace_days)
        recent = (secret for secret, retired in self.older if now - retired < grace)
        return list(dict.fromkeys([self.current, *recent, *self.fallbacks]))
