"""A stand-in for Amazon SNS's HTTP(S) delivery: signs messages exactly as SNS does and serves
the signing certificate (and the SubscribeURL) from 127.0.0.1.

    with FakeSns() as sns:
        message = sns.notification(ses_bounce("a@example.com", message_id="0100…"))  # signed, v1
        message = sns.notification(event, signature_version="2")                    # SHA256withRSA
        message = sns.subscription_confirmation()
        ... POST orjson.dumps(message) to /hooks/ses ...
        assert sns.confirmations == 1

The key pair and a self-signed X.509 certificate are generated once per process with
`cryptography`; `SigningCertURL` points at `http://127.0.0.1:<port>/SimpleNotificationService-test.pem`.
"""

from __future__ import annotations

import base64
import functools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.fakes import AppServer

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-notifications"
CERT_PATH = "/SimpleNotificationService-test.pem"
CONFIRM_PATH = "/confirm"
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


@functools.cache
def signing_identity() -> tuple[rsa.RSAPrivateKey, bytes]:
    """(private key, PEM of a self-signed certificate for it), made once per test process."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


def canonical(message: dict[str, Any]) -> bytes:
    keys = NOTIFICATION_KEYS if message["Type"] == "Notification" else SUBSCRIPTION_KEYS
    return "".join(f"{k}\n{message[k]}\n" for k in keys if k in message).encode()


def sign(
    message: dict[str, Any], cert_url: str, signature_version: str = "1", key: rsa.RSAPrivateKey | None = None
) -> dict[str, Any]:
    """The message with SignatureVersion, SigningCertURL and Signature, as SNS sends it."""
    private_key = key or signing_identity()[0]
    algorithm = hashes.SHA1() if signature_version == "1" else hashes.SHA256()
    signature = private_key.sign(canonical(message), padding.PKCS1v15(), algorithm)
    return {
        **message,
        "SignatureVersion": signature_version,
        "SigningCertURL": cert_url,
        "Signature": base64.b64encode(signature).decode(),
    }


def ses_bounce(*addresses: str, message_id: str, permanent: bool = True) -> dict[str, Any]:
    """An SES bounce notification (the JSON inside the SNS Message)."""
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent" if permanent else "Transient",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": a, "status": "5.1.1"} for a in addresses],
            "timestamp": "2026-11-21T20:00:00.000Z",
            "feedbackId": uuid.uuid4().hex,
        },
        "mail": {"messageId": message_id, "source": "noreply@example.com", "destination": list(addresses)},
    }


def ses_complaint(*addresses: str, message_id: str) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": a} for a in addresses],
            "complaintFeedbackType": "abuse",
            "timestamp": "2026-11-21T20:00:00.000Z",
        },
        "mail": {"messageId": message_id, "source": "noreply@example.com", "destination": list(addresses)},
    }


class FakeSns(AppServer):
    """Serves the certificate and records subscription confirmations."""

    thread_name = "fake-sns"

    @property
    def cert_url(self) -> str:
        return self.url + CERT_PATH

    @property
    def confirmations(self) -> int:
        return len(self.requests_to(CONFIRM_PATH))

    def notification(
        self,
        event: dict[str, Any],
        *,
        signature_version: str = "1",
        topic_arn: str = TOPIC_ARN,
        subject: str | None = "Amazon SES Email Event Notification",
    ) -> dict[str, Any]:
        import orjson

        message: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": orjson.dumps(event).decode(),
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        if subject is not None:
            message["Subject"] = subject
        return sign(message, self.cert_url, signature_version)

    def subscription_confirmation(
        self, *, topic_arn: str = TOPIC_ARN, subscribe_url: str | None = None
    ) -> dict[str, Any]:
        token = uuid.uuid4().hex * 2
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic_arn,
            "Message": f"You have chosen to subscribe to the topic {topic_arn}.",
            "SubscribeURL": subscribe_url or f"{self.url}{CONFIRM_PATH}?Token={token}",
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        return sign(message, self.cert_url, "1")

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.path == CERT_PATH:
            return web.Response(body=signing_identity()[1], content_type="application/x-pem-file")
        if request.path == CONFIRM_PATH:
            return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")
        return web.Response(status=404)
