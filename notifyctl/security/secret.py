"""The installation's secret, and the secrets it replaced: which one signs, which ones still verify.

One secret signs one-click unsubscribe links (security/unsubscribe.py) and keys the erasure hashes
(security/erasure.py). Where it comes from and how it is kept is notifyctl/store/secrets.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from notifyctl.security.erasure import erasure_key


@dataclass(frozen=True)
class InstallationSecret:
    """The current secret and the older ones, each with the moment it stopped signing."""

    current: str
    older: tuple[tuple[str, datetime], ...] = ()
    erasure_keys: tuple[bytes, ...] = field(init=False, repr=False)  # the current one's first

    def __post_init__(self) -> None:
        keys = [erasure_key(self.current), *(erasure_key(secret) for secret, _ in self.older)]
        object.__setattr__(self, "erasure_keys", tuple(dict.fromkeys(keys)))

    def __repr__(self) -> str:
        return f"InstallationSecret(<{1 + len(self.older)} secrets>)"

    @property
    def erasure_key(self) -> bytes:
        """What new erasure hashes are keyed with."""
        return self.erasure_keys[0]

    def link_secrets(self, now: datetime, grace_days: float) -> list[str]:
        """What an unsubscribe link may be signed with: the current secret, and those replaced less
        than `grace_days` ago (links already sent keep working that long)."""
        grace = timedelta(days=grace_days)
        return [self.current, *(secret for secret, retired in self.older if now - retired < grace)]
