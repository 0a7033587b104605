"""Mutual TLS to webhook endpoints: a real HTTPS server on 127.0.0.1 that requires a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from notifyctl.errors import InputError, OutcomeUnknown, PermanentError
from notifyctl.models import Envelope, User
from notifyctl.providers.base import ProviderContext
from notifyctl.providers.webhook import WebhookProvider
from notifyctl.store import endpoints
from notifyctl.store.db import connect
from notifyctl.store.directory import upsert_users
from tests.webhook_sink import SINK_SECRET


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # signed by a CA the server does not trust
    other_client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path.with_suffix(".pem"), path.with_suffix(".key")


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None, signer: ec.EllipticCurvePrivateKey,
    *, ca: bool = False, server: bool = False,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key = _key(), _key()
    ca = _cert("notifyctl test CA", ca_key, None, ca_key, ca=True)
    rogue = _cert("rogue CA", rogue_key, None, rogue_key, ca=True)
    ca_path, _ = _write(root / "ca", ca, ca_key)
    server_key, client_key, other_key = _key(), _key(), _key()
    server = _write(root / "server", _cert("127.0.0.1", server_key, ca.subject, ca_key, server=True), server_key)
    client = _write(root / "client", _cert("notifyctl-client", client_key, ca.subject, ca_key), client_key)
    other = _write(root / "other", _cert("intruder", other_key, rogue.subject, rogue_key), other_key)
    return Pki(ca_path, *server, *client, *other)


@dataclass
class MtlsServer:
    url: str
    peers: list[str]


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[MtlsServer]:
    peers: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item[0] for item in cert["subject"]) if cert else {}
        peers.append(str(subject.get("commonName")))
        return web.Response(status=204)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield MtlsServer(f"https://127.0.0.1:{port}/hook", peers)
    finally:
        await runner.cleanup()


def envelope(url: str, client_cert: str | None) -> Envelope:
    return Envelope(
        delivery_id=1, run_id="run_1", channel="webhook", user_id="u1", address=url, template="t",
        template_version="v", category="transactional", idempotency_key="k", message_id="msg_abc",
        parts={"body": {"type": "test"}}, signing_secrets=[SINK_SECRET], client_cert=client_cert,
    )  # fmt: skip


async def provider_for(pki: Pki, tmp_path: Path) -> WebhookProvider:
    context = ProviderContext(
        name="webhook", settings={"allow_hosts": ["127.0.0.1"], "ca_file": str(pki.ca), "timeout_s": 5},
        db_path=tmp_path / "db", base_dir=tmp_path,
    )  # fmt: skip
    provider = WebhookProvider(context)
    await provider.open()
    return provider


async def test_client_certificate_is_presented_to_an_mtls_endpoint(
    pki: Pki, mtls_server: MtlsServer, tmp_path: Path
) -> None:
    provider = await provider_for(pki, tmp_path)
    try:
        result = await provider.send(envelope(mtls_server.url, f"{pki.client_cert}\n{pki.client_key}"))
        again = await provider.send(envelope(mtls_server.url, f"{pki.client_cert}\n{pki.client_key}"))
    finally:
        await provider.close()
    assert result.status_code == again.status_code == 204
    assert mtls_server.peers == ["notifyctl-client", "notifyctl-client"]
    assert len(provider._tls) == 1  # one context per (cert, key), reused


@pytest.mark.parametrize(
    ("which", "error"),
    [
        # TLS 1.3: the client's side of the handshake is done before the server checks its
        # certificate, so the request is written and the refusal arrives as the connection ending:
        # from the client's side, an unknown outcome (the server never saw it: `peers` below).
        pytest.param("none", OutcomeUnknown, id="no-client-certificate"),
        pytest.param("untrusted", OutcomeUnknown, id="certificate-from-another-ca"),
        pytest.param("missing-file", PermanentError, id="certificate-file-missing"),
        pytest.param("no-key", PermanentError, id="no-key-path"),
    ],
)
async def test_endpoint_refuses_without_the_right_certificate(
    pki: Pki, mtls_server: MtlsServer, tmp_path: Path, which: str, error: type[Exception]
) -> None:
    client_cert = {
        "none": None,
        "untrusted": f"{pki.other_client_cert}\n{pki.other_client_key}",
        "missing-file": f"{tmp_path / 'nope.pem'}\n{pki.client_key}",
        "no-key": str(pki.client_cert),
    }[which]
    provider = await provider_for(pki, tmp_path)
    try:
        with pytest.raises(error) as caught:
            await provider.send(envelope(mtls_server.url, client_cert))
    finally:
        await provider.close()
    assert mtls_server.peers == []
    if isinstance(caught.value, PermanentError):
        assert caught.value.code == "client_cert"
        assert "PRIVATE KEY" not in str(caught.value)


def test_set_client_cert_stores_paths_and_checks_the_pair(pki: Pki, tmp_path: Path) -> None:
    conn = connect(tmp_path / "n.db")
    upsert_users(conn, [User(user_id="u1", webhook_url="https://hooks.example.com/x", webhook_secret=SINK_SECRET)])
    with pytest.raises(InputError, match="do not load together"):
        endpoints.set_client_cert(conn, "u1", pki.client_cert, pki.other_client_key)
    endpoints.set_client_cert(conn, "u1", pki.client_cert, pki.client_key)
    assert endpoints.client_cert(conn, "u1") == f"{pki.client_cert.resolve()}\n{pki.client_key.resolve()}"
    assert endpoints.show(conn, "u1")["client_key"] == "(set)"
    endpoints.set_client_cert(conn, "u1", None, None)
    assert endpoints.client_cert(conn, "u1") is None
