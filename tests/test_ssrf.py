"""The SSRF guard: every refused range, the IPv4-in-IPv6 forms, odd IPv4 notations, resolve once."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest
from yarl import URL

from notifyctl.providers.transports.http1 import Http1Pool, Target
from notifyctl.security.ssrf import SsrfRefused, check_ip, parse_host_ip, resolve_checked
from tests.webhook_sink import WebhookSink

REFUSED = [
    # IPv4
    pytest.param("0.0.0.0", "this network", id="v4-unspecified"),
    pytest.param("0.1.2.3", "this network", id="v4-0/8"),
    pytest.param("10.0.0.1", "private", id="v4-10/8"),
    pytest.param("172.16.0.1", "private", id="v4-172.16/12-low"),
    pytest.param("172.31.255.254", "private", id="v4-172.16/12-high"),
    pytest.param("192.168.1.1", "private", id="v4-192.168/16"),
    pytest.param("100.64.0.1", "carrier-grade NAT", id="v4-cgnat-low"),
    pytest.param("100.127.255.254", "carrier-grade NAT", id="v4-cgnat-high"),
    pytest.param("127.0.0.1", "loopback", id="v4-loopback"),
    pytest.param("127.255.255.254", "loopback", id="v4-loopback-high"),
    pytest.param("169.254.169.254", "link-local", id="v4-cloud-metadata"),
    pytest.param("169.254.0.1", "link-local", id="v4-link-local"),
    pytest.param("192.0.0.8", "IETF protocol", id="v4-ietf-192.0.0/24"),
    pytest.param("192.0.2.1", "documentation", id="v4-doc-test-net-1"),
    pytest.param("198.51.100.7", "documentation", id="v4-doc-test-net-2"),
    pytest.param("203.0.113.9", "documentation", id="v4-doc-test-net-3"),
    pytest.param("198.18.0.1", "benchmarking", id="v4-benchmarking-low"),
    pytest.param("198.19.255.254", "benchmarking", id="v4-benchmarking-high"),
    pytest.param("192.88.99.1", "6to4 relay", id="v4-6to4-relay-anycast"),
    pytest.param("224.0.0.1", "multicast", id="v4-multicast-low"),
    pytest.param("239.255.255.250", "multicast", id="v4-multicast-ssdp"),
    pytest.param("240.0.0.1", "reserved", id="v4-240/4"),
    pytest.param("255.255.255.255", "broadcast", id="v4-broadcast"),
    # IPv6
    pytest.param("::", "unspecified", id="v6-unspecified"),
    pytest.param("::1", "loopback", id="v6-loopback"),
    pytest.param("[::1]", "loopback", id="v6-loopback-bracketed"),
    pytest.param("fe80::1", "link-local", id="v6-link-local"),
    pytest.param("fe80::1%eth0", "zone", id="v6-link-local-with-zone"),
    pytest.param("fec0::1", "site-local", id="v6-site-local"),
    pytest.param("fc00::1", "unique local", id="v6-ula-fc"),
    pytest.param("fd00:ec2::254", "unique local", id="v6-aws-metadata"),
    pytest.param("ff02::1", "multicast", id="v6-multicast"),
    pytest.param("2001:db8::1", "documentation", id="v6-documentation"),
    pytest.param("3fff::1", "documentation", id="v6-documentation-3fff"),
    pytest.param("100::1", "discard", id="v6-discard-only"),
    pytest.param("2001:2::1", "benchmarking", id="v6-benchmarking"),
    # IPv4 embedded in IPv6
    pytest.param("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1", id="mapped-loopback"),
    pytest.param("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254", id="mapped-metadata"),
    pytest.param("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1", id="mapped-private"),
    pytest.param("::127.0.0.1", "IPv4-compatible form of 127.0.0.1", id="compatible-loopback"),
    pytest.param("::10.1.2.3", "IPv4-compatible form of 10.1.2.3", id="compatible-private"),
    pytest.param("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1", id="nat64-loopback"),
    pytest.param("64:ff9b::169.254.169.254", "NAT64 form of 169.254.169.254", id="nat64-metadata"),
    pytest.param("64:ff9b:1::a00:1", "NAT64 form of 10.0.0.1", id="nat64-local-use-private"),
    pytest.param("64:ff9b:1::808:808", "local-use NAT64 prefix", id="nat64-local-use-prefix"),
    pytest.param("2002:7f00:1::", "6to4 form of 127.0.0.1", id="6to4-loopback"),
    pytest.param("2002:a9fe:a9fe::1", "6to4 form of 169.254.169.254", id="6to4-metadata"),
    pytest.param("2001:0:7f00:1::1", "Teredo server form of 127.0.0.1", id="teredo-server-loopback"),
    pytest.param("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo client form of 192.0.2.45", id="teredo-client"),
    # IPv4 notations that resolvers (inet_aton) accept
    pytest.param("0x7f000001", "loopback", id="hex-loopback"),
    pytest.param("2130706433", "loopback", id="decimal-loopback"),
    pytest.param("0177.0.0.1", "loopback", id="octal-loopback"),
    pytest.param("127.1", "loopback", id="short-loopback"),
    pytest.param("0x7f.1", "loopback", id="short-hex-loopback"),
    pytest.param("017700000001", "loopback", id="octal-single-number"),
    pytest.param("0xa9.0xfe.0xa9.0xfe", "link-local", id="hex-dotted-metadata"),
    pytest.param("169.254.43518", "link-local", id="three-part-metadata"),
    pytest.param("127.0.0.1.", "loopback", id="trailing-dot"),
    pytest.param("0", "this network", id="single-zero"),
]

ALLOWED = [
    pytest.param("8.8.8.8", id="v4-google-dns"),
    pytest.param("1.1.1.1", id="v4-cloudflare-dns"),
    pytest.param("93.184.216.34", id="v4-public"),
    pytest.param("2606:4700::1111", id="v6-cloudflare-dns"),
    pytest.param("2001:4860:4860::8888", id="v6-google-dns"),
    pytest.param("::ffff:8.8.8.8", id="mapped-public"),
    pytest.param("64:ff9b::8.8.8.8", id="nat64-public"),
    pytest.param("2002:808:808::1", id="6to4-public"),
    pytest.param("0x08080808", id="hex-public"),
]


@pytest.mark.parametrize(("host", "reason_part"), REFUSED)
def test_refused(host: str, reason_part: str) -> None:
    ip = parse_host_ip(host)
    assert ip is not None
    reason = check_ip(ip)
    assert reason is not None
    assert reason_part in reason


@pytest.mark.parametrize("host", ALLOWED)
def test_allowed(host: str) -> None:
    ip = parse_host_ip(host)
    assert ip is not None
    assert check_ip(ip) is None


def test_is_global_alone_would_let_embedded_forms_through() -> None:
    # The reason this module exists: the stdlib calls these global.
    for text in ("64:ff9b::7f00:1", "2002:7f00:1::", "224.0.0.1"):
        ip = ipaddress.ip_address(text)
        assert ip.is_global
        assert check_ip(ip) is not None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("127.0.0.1", "127.0.0.1", id="dotted"),
        pytest.param("2130706433", "127.0.0.1", id="decimal"),
        pytest.param("0x7f000001", "127.0.0.1", id="hex"),
        pytest.param("0X7F000001", "127.0.0.1", id="hex-upper"),
        pytest.param("0177.0.0.1", "127.0.0.1", id="octal"),
        pytest.param("127.1", "127.0.0.1", id="two-parts"),
        pytest.param("10.1.2", "10.1.0.2", id="three-parts"),
        pytest.param("[2001:db8::1]", "2001:db8::1", id="bracketed-v6"),
        pytest.param("example.com", None, id="name"),
        pytest.param("localhost", None, id="localhost-is-a-name"),
        pytest.param("1.2.3.4.5", None, id="five-parts"),
        pytest.param("256.0.0.1", None, id="part-too-big"),
        pytest.param("1.16777216", None, id="last-part-too-big"),
        pytest.param("08.0.0.1", None, id="bad-octal"),
        pytest.param("0x7g.0.0.1", None, id="bad-hex"),
        pytest.param("1_0.0.0.1", None, id="underscore"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_host_ip(host: str, expected: str | None) -> None:
    parsed = parse_host_ip(host)
    assert (str(parsed) if parsed is not None else None) == expected


async def test_resolve_checked_literal_needs_no_dns() -> None:
    assert await resolve_checked("8.8.8.8", 443, []) == ["8.8.8.8"]
    with pytest.raises(SsrfRefused, match="loopback"):
        await resolve_checked("2130706433", 443, [])


async def test_resolve_checked_refuses_localhost_unless_allowlisted() -> None:
    with pytest.raises(SsrfRefused, match="loopback"):
        await resolve_checked("localhost", 80, [])
    addresses = await resolve_checked("localhost", 80, ["LocalHost."])
    assert addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


class FakeDns:
    """Answers getaddrinfo from a script, one answer per call, and counts the calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def getaddrinfo(self, host: str, port: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        infos: list[tuple[Any, ...]] = []
        for address in answer:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port))))
        return infos


async def test_one_bad_address_among_good_ones_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeDns(["8.8.8.8", "10.0.0.7", "1.1.1.1"])
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", dns.getaddrinfo)
    with pytest.raises(SsrfRefused, match=r"10\.0\.0\.7"):
        await resolve_checked("mixed.example", 443, [])
    assert dns.calls == 1


async def test_mapped_answer_from_dns_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    dns = FakeDns(["::ffff:169.254.169.254"])
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", dns.getaddrinfo)
    with pytest.raises(SsrfRefused, match="IPv4-mapped"):
        await resolve_checked("aaaa-only.example", 443, [])


# The webhook client's connections (providers/http1.py) resolve through the guard.


async def post_through_pool(url: str, allow_hosts: tuple[str, ...], timeout_s: float = 5.0) -> int:
    pool = Http1Pool(limit=4, timeout_s=timeout_s, allow_hosts=allow_hosts)
    try:
        status, _ = await pool.post(Target.of(URL(url), "notifyctl-test"), None, b"", b"{}")
        return status
    finally:
        await pool.close()


async def test_connector_refuses_a_name_that_resolves_to_loopback(webhook_sink: WebhookSink) -> None:
    with pytest.raises(SsrfRefused):
        await post_through_pool(f"http://localhost:{webhook_sink.port}/hook", ())
    assert webhook_sink.requests == []


async def test_connector_reaches_an_allowlisted_name(webhook_sink: WebhookSink) -> None:
    assert await post_through_pool(f"http://localhost:{webhook_sink.port}/hook", ("localhost",)) == 200
    assert len(webhook_sink.requests) == 1


async def test_dns_rebinding_gets_no_second_lookup(webhook_sink: WebhookSink, monkeypatch: pytest.MonkeyPatch) -> None:
    # First answer passes the check; a second lookup would get loopback, where the sink listens.
    dns = FakeDns(["8.8.8.8"], ["127.0.0.1"])
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", dns.getaddrinfo)
    with pytest.raises((OSError, TimeoutError)):
        await post_through_pool(f"http://rebind.example:{webhook_sink.port}/hook", (), timeout_s=0.5)
    assert dns.calls == 1
    assert webhook_sink.requests == []
