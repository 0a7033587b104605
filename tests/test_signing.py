"""Standard Webhooks signing: the spec vector, the official verifier, rotation, ids."""

from __future__ import annotations

import base64
import hashlib
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from notifyctl.security.signing import sign, signature_header, verify, webhook_id

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret key, 32 bytes!!!!").decode()


def _headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }


def test_spec_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_spec_vector_verifies_at_its_own_time() -> None:
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP), "webhook-signature": SPEC_SIGNATURE}
    assert verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10)
    assert not verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 301)


def test_official_verifier_accepts_our_headers() -> None:
    body = b'{"event":"invoice.paid","amount":4200}'
    headers = _headers([SPEC_SECRET], webhook_id("user-1:invoice:42"), int(time.time()), body)
    assert Webhook(SPEC_SECRET).verify(body, headers) == {"event": "invoice.paid", "amount": 4200}


def test_official_verifier_rejects_a_tampered_body() -> None:
    body = b'{"amount":1}'
    headers = _headers([SPEC_SECRET], "msg_x", int(time.time()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SPEC_SECRET).verify(b'{"amount":2}', headers)


@pytest.mark.parametrize("receiver_secret", [SPEC_SECRET, OTHER_SECRET], ids=["old-secret", "new-secret"])
def test_rotation_signs_with_every_secret(receiver_secret: str) -> None:
    body = b'{"n":1}'
    headers = _headers([SPEC_SECRET, OTHER_SECRET], "msg_rotation", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(receiver_secret).verify(body, headers)  # raises when no signature matches
    assert verify(receiver_secret, headers, body)


def test_unrelated_secret_does_not_verify_a_rotation_header() -> None:
    body = b"{}"
    unrelated = "whsec_" + base64.b64encode(b"x" * 24).decode()
    headers = _headers([SPEC_SECRET, OTHER_SECRET], "msg_rotation", int(time.time()), body)
    assert not verify(unrelated, headers, body)


NOW = 1_700_000_000


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"webhook-id": SPEC_ID, "webhook-timestamp": str(NOW)}, SPEC_BODY, id="no-signature"),
        pytest.param(
            {"webhook-id": SPEC_ID, "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"},
            SPEC_BODY,
            id="timestamp-not-a-number",
        ),
        pytest.param(_headers([SPEC_SECRET], SPEC_ID, NOW - 301, SPEC_BODY), SPEC_BODY, id="too-old"),
        pytest.param(_headers([SPEC_SECRET], SPEC_ID, NOW + 301, SPEC_BODY), SPEC_BODY, id="too-new"),
        pytest.param(_headers([SPEC_SECRET], SPEC_ID, NOW, SPEC_BODY), SPEC_BODY + b" ", id="body-changed"),
        pytest.param(_headers([OTHER_SECRET], SPEC_ID, NOW, SPEC_BODY), SPEC_BODY, id="other-secret"),
        pytest.param(
            {
                "webhook-id": SPEC_ID,
                "webhook-timestamp": str(NOW),
                "webhook-signature": sign(SPEC_SECRET, SPEC_ID, NOW, SPEC_BODY).replace("v1,", "v2,"),
            },
            SPEC_BODY,
            id="unknown-version",
        ),
        pytest.param(
            {"webhook-id": SPEC_ID, "webhook-timestamp": str(NOW), "webhook-signature": "v1,not base64!"},
            SPEC_BODY,
            id="garbage-signature",
        ),
    ],
)
def test_verify_refuses(headers: dict[str, str], body: bytes) -> None:
    assert not verify(SPEC_SECRET, headers, body, now=NOW)


def test_verify_ignores_header_case() -> None:
    headers = {k.title(): v for k, v in _headers([SPEC_SECRET], SPEC_ID, NOW, SPEC_BODY).items()}
    assert verify(SPEC_SECRET, headers, SPEC_BODY, now=NOW)


def test_secret_without_prefix_or_padding_is_the_same_key() -> None:
    bare = SPEC_SECRET.removeprefix("whsec_")
    assert sign(bare, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    unpadded = "whsec_" + base64.b64encode(b"sixteen byte key").decode().rstrip("=")
    padded = "whsec_" + base64.b64encode(b"sixteen byte key").decode()
    assert sign(unpadded, "msg_a", 1, b"{}") == sign(padded, "msg_a", 1, b"{}")


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not*base64"], ids=["empty", "not-base64"])
def test_bad_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        sign(secret, "msg_a", 1, b"{}")


@pytest.mark.parametrize(
    "idempotency_key",
    [
        pytest.param("user-1:welcome:evt-1", id="plain"),
        pytest.param("a.b.c", id="dots"),
        pytest.param("ünïcödé key with spaces", id="unicode"),
        pytest.param("", id="empty"),
    ],
)
def test_webhook_id_format(idempotency_key: str) -> None:
    derived = webhook_id(idempotency_key)
    assert re.fullmatch(r"msg_[a-z2-7]{26}", derived)
    assert "." not in derived
    assert webhook_id(idempotency_key) == derived


@settings(max_examples=300, deadline=None)
@given(idempotency_key=st.text())
def test_webhook_id_is_the_base32_of_the_keys_sha256(idempotency_key: str) -> None:
    """The id computed from an integer is the first 26 characters of the lower-cased base32 of the
    key's SHA-256, as the first version computed it: ids of planned rows do not change."""
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    assert webhook_id(idempotency_key) == "msg_" + base64.b32encode(digest).decode().lower()[:26]


def test_webhook_ids_differ_per_key() -> None:
    ids = {webhook_id(f"user-{n}:t:e") for n in range(1000)}
    assert len(ids) == 1000
