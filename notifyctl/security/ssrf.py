"""Server-side request forgery guard for outbound webhooks.

A webhook URL is chosen by a customer, so it may point at our own network (the cloud metadata
service at 169.254.169.254 or fd00:ec2::254, a database on 10.0.0.5, localhost). The guard
resolves the host once, refuses the request when any resolved address is not public, and the
webhook client (providers/http1.py) connects to exactly the checked addresses, so a second DNS
answer (rebinding) is never used. `ipaddress.is_global` alone is not enough: NAT64, 6to4 and
IPv4-mapped forms of a private IPv4 address pass it, so those are unwrapped and the embedded IPv4
address is checked too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked in order; the first match names the reason.
_REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (_V4("10.0.0.0/8"), "private (10.0.0.0/8)"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT (100.64.0.0/10)"),
    (_V4("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (_V4("169.254.0.0/16"), "link-local (169.254.0.0/16, cloud metadata)"),
    (_V4("172.16.0.0/12"), "private (172.16.0.0/12)"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments (192.0.0.0/24)"),
    (_V4("192.0.2.0/24"), "documentation (192.0.2.0/24)"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast (192.88.99.0/24)"),
    (_V4("192.168.0.0/16"), "private (192.168.0.0/16)"),
    (_V4("198.18.0.0/15"), "benchmarking (198.18.0.0/15)"),
    (_V4("198.51.100.0/24"), "documentation (198.51.100.0/24)"),
    (_V4("203.0.113.0/24"), "documentation (203.0.113.0/24)"),
    (_V4("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (_V4("255.255.255.255/32"), "broadcast (255.255.255.255)"),
    (_V4("240.0.0.0/4"), "reserved (240.0.0.0/4)"),
)

_REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified (::)"),
    (_V6("::1/128"), "loopback (::1)"),
    (_V6("100::/64"), "discard-only (100::/64)"),
    (_V6("2001:2::/48"), "benchmarking (2001:2::/48)"),
    (_V6("2001:db8::/32"), "documentation (2001:db8::/32)"),
    (_V6("3fff::/20"), "documentation (3fff::/20)"),
    (_V6("fc00::/7"), "unique local (fc00::/7)"),
    (_V6("fe80::/10"), "link-local (fe80::/10)"),
    (_V6("fec0::/10"), "site-local (fec0::/10)"),
    (_V6("ff00::/8"), "multicast (ff00::/8)"),
)

_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]*")
_OCTAL_PART = re.compile(r"0[0-7]+")
_DECIMAL_PART = re.compile(r"0|[1-9][0-9]*")

_IPV4_MAPPED = _V6("::ffff:0:0/96")
_IPV4_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_NAT64_LOCAL = _V6("64:ff9b:1::/48")
_SIX_TO_FOUR = _V6("2002::/16")
_TEREDO = _V6("2001::/32")


class SsrfRefused(OSError):
    """A host resolved to an address that outbound requests may not reach.

    An OSError, like any failure to connect; the webhook provider recognises it and reports a
    permanent `ssrf` error.
    """

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"refused to connect to {host}: {reason}")


def _v4_reason(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _REFUSED_V4:
        if ip in network:
            return reason
    if not ip.is_global:
        return "not globally routable"
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses carried inside an IPv6 address, with the name of the form."""
    value = int(ip)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip in _IPV4_MAPPED:
        return [("IPv4-mapped", low32)]
    if ip in _IPV4_COMPATIBLE:
        return [("IPv4-compatible", low32)]
    if ip in _NAT64:
        return [("NAT64", low32)]
    if ip in _NAT64_LOCAL:
        # RFC 8215 lets the operator choose where the IPv4 bits sit; /96 is the usual layout.
        return [("local-use NAT64", low32)]
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return [("6to4", ip.sixtofour)]
    if ip in _TEREDO and ip.teredo is not None:
        server, client = ip.teredo
        return [("Teredo server", server), ("Teredo client", client)]
    return []


def _check_v6(ip: ipaddress.IPv6Address) -> str | None:
    for network, reason in _REFUSED_V6:
        if ip in network:
            return f"{ip} is {reason}"
    for form, inner in _embedded_v4(ip):
        inner_reason = _v4_reason(inner)
        if inner_reason is not None:
            return f"{ip} is the {form} form of {inner}, which is {inner_reason}"
    if ip in _NAT64_LOCAL:
        return f"{ip} is in the local-use NAT64 prefix (64:ff9b:1::/48)"
    if ip in _IPV4_MAPPED or ip in _IPV4_COMPATIBLE:
        # Public IPv4 behind a mapped form: judged by the IPv4 rules above, nothing more to refuse.
        return None
    if not ip.is_global:
        return f"{ip} is not globally routable"
    return None


def check_ip(ip: IPAddress) -> str | None:
    """Why outbound requests may not go to `ip`, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv4Address):
        reason = _v4_reason(ip)
        return None if reason is None else f"{ip} is {reason}"
    if ip.scope_id:
        return f"{ip} carries a zone index (link-scoped)"
    return _check_v6(ip)


def _parse_ipv4_part(text: str) -> int | None:
    """One inet_aton number: decimal, 0x hex or 0-prefixed octal."""
    if _HEX_PART.fullmatch(text):
        return int(text[2:] or "0", 16)
    if _OCTAL_PART.fullmatch(text):
        return int(text, 8)
    if _DECIMAL_PART.fullmatch(text):
        return int(text, 10)
    return None


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address inet_aton() would make of `host`: 2130706433, 0x7f000001, 0177.0.0.1, 127.1."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_parse_ipv4_part(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    values = [number for number in numbers if number is not None]
    *leading, last = values
    if any(value > 0xFF for value in leading):
        return None
    last_bits = 8 * (5 - len(values))
    if last >= 1 << last_bits:
        return None
    value = 0
    for index, number in enumerate(leading):
        value |= number << (24 - 8 * index)
    return ipaddress.IPv4Address(value | last)


def parse_host_ip(host: str) -> IPAddress | None:
    """The IP address a URL host denotes (any notation a resolver would accept), or None for a name."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if ":" in text:
        return None
    # A trailing dot makes a name absolute; "127.0.0.1." still ends up at 127.0.0.1.
    return _parse_legacy_ipv4(text.removesuffix("."))


def normalize_host(host: str) -> str:
    """A host as compared against the allowlist: lower case, no brackets, no trailing dot."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text.rstrip(".")


def is_allowed_host(host: str, allow_hosts: Iterable[str]) -> bool:
    """True when `host` is explicitly allowlisted (tests, private deployments)."""
    wanted = normalize_host(host)
    return any(wanted == normalize_host(allowed) for allowed in allow_hosts)


async def resolve_checked(host: str, port: int, allow_hosts: Iterable[str]) -> list[str]:
    """Resolve `host` once; its addresses, or SsrfRefused if any is not public (unless allowlisted)."""
    allowed = is_allowed_host(host, allow_hosts)
    literal = parse_host_ip(host)
    if literal is not None:
        reason = None if allowed else check_ip(literal)
        if reason is not None:
            raise SsrfRefused(host, reason)
        return [str(literal)]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=socket.AF_UNSPEC)
    addresses: list[str] = []
    for _, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        if not allowed:
            reason = check_ip(ipaddress.ip_address(address.split("%", 1)[0]))
            if reason is not None:
                # One bad answer refuses them all: otherwise the connection could pick it.
                raise SsrfRefused(host, reason)
        addresses.append(address)
    if not addresses:
        raise OSError(f"{host} did not resolve to any address")
    return addresses
