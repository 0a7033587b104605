"""Where unsubscribe links point: at a real `public_url` before a real provider carries them.

Every one-click unsubscribe link (the List-Unsubscribe header of marketing email, and templates'
`unsubscribe_url`) points at `public_url`. Unset, or left at an example or local address, the
links lead nowhere a recipient can reach: harmless in the local outbox (a warning), refused when a
real email provider (SES, SMTP, Postmark) would deliver them to real inboxes.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from notifyctl.categories import CategoryRule
from notifyctl.errors import InputError
from notifyctl.settings import Settings

REAL_EMAIL_PROVIDERS = frozenset({"ses", "smtp", "postmark"})
EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")  # RFC 2606
RESERVED_TLDS = ("example", "test", "invalid", "localhost", "local")  # RFC 2606, RFC 6761, mDNS


def _local_or_example(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in EXAMPLE_DOMAINS or host.endswith(tuple(f".{d}" for d in EXAMPLE_DOMAINS)):
        return True
    if host == "localhost" or host.rsplit(".", 1)[-1] in RESERVED_TLDS:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global


def public_url_problem(settings: Settings) -> str | None:
    """What is wrong with `public_url` as the address of links in real inboxes, or None."""
    if settings.public_url is None:
        return f"public_url is not set (links would point at {settings.public_base_url})"
    host = urlsplit(settings.public_url).hostname or ""
    if _local_or_example(host):
        return f"public_url {settings.public_url} is an example or local address"
    return None


def real_email_providers(settings: Settings) -> list[str]:
    """The provider accounts that deliver this installation's email to real inboxes."""
    route = settings.channels.get("email")
    names = route.names if route is not None else []
    return [name for name in names if settings.providers[name].type in REAL_EMAIL_PROVIDERS]


def check_unsubscribe_links(settings: Settings, channels: list[str], category: str, rule: CategoryRule) -> None:
    """Refuse (InputError) email with one-click unsubscribe links bound for real inboxes while the
    links point at no real public address."""
    if "email" not in channels or not rule.list_unsubscribe:
        return
    providers = real_email_providers(settings)
    problem = public_url_problem(settings) if providers else None
    if problem is not None:
        raise InputError(
            f"email of category '{category}' carries a one-click unsubscribe link and provider "
            f"{', '.join(providers)} delivers it to real inboxes, but {problem}: set public_url in "
            f"{settings.source} to the https:// address where `notifyctl serve` is reachable"
        )
