"""SES notifications through SNS, signed with a locally generated certificate served from 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from notifyctl.server.config import ServerSettings
from notifyctl.server.sns import url_allowed
from tests.fakes.sns import CERT_PATH, FakeSns, ses_bounce, ses_complaint, sign
from tests.test_server_harness import Running, eventually, running, workspace_with_users
from tests.workspace import Workspace


@pytest.fixture
def sns() -> Iterator[FakeSns]:
    with FakeSns() as fake:
        yield fake


def local_sns() -> ServerSettings:
    return ServerSettings(sns_cert_hosts=["127.0.0.1"], sns_subscribe_hosts=["127.0.0.1"], sns_allow_http=True)


async def post(srv: Running, message: dict[str, Any]) -> tuple[int, Any]:
    async with srv.http.post(
        srv.url + "/hooks/ses",
        data=orjson.dumps(message),
        headers={"x-amz-sns-message-type": str(message.get("Type")), "Content-Type": "text/plain; charset=UTF-8"},
    ) as resp:
        return resp.status, await resp.json()


def suppressions(ws: Workspace) -> dict[str, str]:
    with ws.db() as conn:
        return dict(conn.execute("SELECT address, reason FROM suppressions WHERE channel='email'"))


async def sent_email(srv: Running, ws: Workspace, user_id: str = "u1") -> tuple[int, str]:
    """An email really sent through the pipeline: (delivery id, provider message id)."""
    status, body = await srv.api(
        "POST",
        "/v1/notify",
        json={"user_id": user_id, "template": "welcome", "channels": ["email"], "data": {"product_name": "A"}},
    )
    assert status == 202, body
    delivery_id = body["delivery_ids"][0]

    def provider_id() -> str | None:
        with ws.db() as conn:
            row = conn.execute(
                "SELECT provider_message_id FROM deliveries WHERE id=? AND state='sent'", (delivery_id,)
            ).fetchone()
        return None if row is None else row[0]

    await eventually(lambda: provider_id() is not None)
    message_id = provider_id()
    assert message_id
    return delivery_id, message_id


def receipt(ws: Workspace, delivery_id: int) -> str | None:
    with ws.db() as conn:
        value = conn.execute("SELECT receipt_status FROM deliveries WHERE id=?", (delivery_id,)).fetchone()[0]
    return None if value is None else str(value)


@pytest.mark.parametrize("version", [pytest.param("1", id="SHA1withRSA"), pytest.param("2", id="SHA256withRSA")])
async def test_permanent_bounce_suppresses_and_updates_the_delivery(tmp_path: Path, sns: FakeSns, version: str) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws, local_sns()) as srv:
        delivery_id, message_id = await sent_email(srv, ws)
        status, body = await post(
            srv, sns.notification(ses_bounce("User1@Example.com", message_id=message_id), signature_version=version)
        )
    assert status == 200, body
    assert body == {"suppressed": 1, "updated": 1}
    assert suppressions(ws) == {"user1@example.com": "bounce"}
    assert receipt(ws, delivery_id) == "bounced:permanent"


@pytest.mark.parametrize(
    ("event", "expected", "status_text"),
    [
        pytest.param(
            ses_bounce("user1@example.com", message_id="m-1", permanent=False),
            {},
            "bounced:transient",
            id="transient-bounce-not-suppressed",
        ),
        pytest.param(
            ses_complaint("user1@example.com", message_id="m-1"),
            {"user1@example.com": "complaint"},
            "complained",
            id="complaint",
        ),
        pytest.param({"notificationType": "Delivery", "mail": {"messageId": "m-1"}}, {}, "delivered", id="delivery"),
    ],
)
async def test_other_notifications(
    tmp_path: Path, sns: FakeSns, event: dict[str, Any], expected: dict[str, str], status_text: str
) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws, local_sns()) as srv:
        delivery_id, message_id = await sent_email(srv, ws)
        event = orjson.loads(orjson.dumps(event).replace(b'"m-1"', orjson.dumps(message_id)))
        status, _ = await post(srv, sns.notification(event))
    assert status == 200
    assert suppressions(ws) == expected
    assert receipt(ws, delivery_id) == status_text


def forged(sns: FakeSns, what: str) -> dict[str, Any]:
    message = sns.notification(ses_bounce("user1@example.com", message_id="m-1"))
    if what == "tampered-message":
        return {**message, "Message": message["Message"].replace("user1@", "user2@")}
    if what == "other-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return sign(
            {k: v for k, v in message.items() if k not in ("Signature", "SigningCertURL")}, sns.cert_url, key=other
        )
    if what == "untrusted-cert-host":
        return {**message, "SigningCertURL": f"http://localhost:{sns.port}{CERT_PATH}"}
    if what == "cert-not-pem":
        return {**message, "SigningCertURL": f"{sns.url}/cert.txt"}
    if what == "no-signature":
        return {k: v for k, v in message.items() if k != "Signature"}
    if what == "unknown-version":
        return {**message, "SignatureVersion": "3"}
    raise AssertionError(what)


@pytest.mark.parametrize(
    "what", ["tampered-message", "other-key", "untrusted-cert-host", "cert-not-pem", "no-signature", "unknown-version"]
)
async def test_unverifiable_messages_are_refused(tmp_path: Path, sns: FakeSns, what: str) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws, local_sns()) as srv:
        status, body = await post(srv, forged(sns, what))
    assert status == 403, body
    assert suppressions(ws) == {}
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM audit_events WHERE kind='webhook_signature_rejected'").fetchone()[0]


async def test_default_settings_trust_only_aws_hosts(tmp_path: Path, sns: FakeSns) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv:
        status, _ = await post(srv, sns.notification(ses_bounce("user1@example.com", message_id="m-1")))
    assert status == 403
    assert sns.requests_to(CERT_PATH) == []  # not even fetched
    assert suppressions(ws) == {}


async def test_a_redelivered_notification_acts_once(tmp_path: Path, sns: FakeSns) -> None:
    ws = workspace_with_users(tmp_path)
    message = sns.notification(ses_complaint("user1@example.com", message_id="m-1"))
    async with running(ws, local_sns()) as srv:
        assert (await post(srv, message))[0] == 200
        status, body = await post(srv, message)
    assert status == 200 and body == {"duplicate": True}
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM audit_events WHERE kind='suppression_added'").fetchone()[0] == 1
    assert len(sns.requests_to(CERT_PATH)) == 1  # the certificate is cached


async def test_subscription_confirmation_gets_the_subscribe_url(tmp_path: Path, sns: FakeSns) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws, local_sns()) as srv:
        status, body = await post(srv, sns.subscription_confirmation())
        assert status == 200 and body == {"confirmed": True}
        assert sns.confirmations == 1
        # Signed, but the SubscribeURL points somewhere we do not trust: never fetched.
        status, _ = await post(srv, sns.subscription_confirmation(subscribe_url=f"http://localhost:{sns.port}/confirm"))
        assert status == 403
        await asyncio.sleep(0.05)
    assert sns.confirmations == 1


async def test_topic_allowlist(tmp_path: Path, sns: FakeSns) -> None:
    ws = workspace_with_users(tmp_path)
    options = local_sns().model_copy(update={"sns_topic_arns": ["arn:aws:sns:us-east-1:123456789012:other"]})
    async with running(ws, options) as srv:
        status, _ = await post(srv, sns.notification(ses_bounce("user1@example.com", message_id="m-1")))
    assert status == 403
    assert suppressions(ws) == {}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        pytest.param("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", True, id="aws"),
        pytest.param("https://sns.cn-north-1.amazonaws.com.cn/x.pem", True, id="aws-china"),
        pytest.param("http://sns.us-east-1.amazonaws.com/x.pem", False, id="plain-http"),
        pytest.param("https://sns.evil.s3.amazonaws.com/x.pem", False, id="s3-bucket-host"),
        pytest.param("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", False, id="suffix-trick"),
        pytest.param("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", False, id="path-trick"),
        pytest.param("https://user@sns.us-east-1.amazonaws.com/x.pem", False, id="userinfo"),
        pytest.param("https://sns..amazonaws.com/x.pem", False, id="empty-label"),
    ],
)
def test_trusted_hosts(url: str, allowed: bool) -> None:
    assert url_allowed(url, ServerSettings().sns_cert_hosts, allow_http=False) is allowed
