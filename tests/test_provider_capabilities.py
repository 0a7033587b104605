"""providers/capabilities.check: what a provider declares it cannot take is refused before the call."""

from __future__ import annotations

from typing import Any

import pytest

from notifyctl.errors import PermanentError
from notifyctl.models import Envelope
from notifyctl.providers.base import PROVIDER_TYPES, Capabilities, provider_class
from notifyctl.providers.capabilities import body_text, check, payload_bytes

SMS = Capabilities(channels=("sms",), max_body_chars=10)
PUSH = Capabilities(channels=("push",), max_payload_bytes=64)
EMAIL_HTML = Capabilities(channels=("email",), supports_html=True)
EMAIL_TEXT_ONLY = Capabilities(channels=("email",))


def envelope(channel: str, parts: dict[str, Any]) -> Envelope:
    return Envelope(
        delivery_id=7,
        run_id="run_caps",
        channel=channel,
        user_id="u1",
        address="someone",
        template="welcome",
        template_version="v1",
        category="transactional",
        idempotency_key="u1:welcome:evt-1",
        message_id="msg_7",
        parts=parts,
        signing_secrets=["whsec_kept"],
    )


@pytest.mark.parametrize(
    ("capabilities", "channel", "parts", "code"),
    [
        pytest.param(SMS, "sms", {"text": "x" * 10}, None, id="sms-at-the-limit"),
        pytest.param(SMS, "sms", {"text": "x" * 11}, "too_long", id="sms-over-the-limit"),
        pytest.param(SMS, "sms", {"text": "é" * 10}, None, id="characters-not-bytes"),
        pytest.param(SMS, "email", {"subject": "s", "text": "t"}, "wrong_channel", id="wrong-channel"),
        pytest.param(PUSH, "push", {"title": "t", "body": "b", "data": {}}, None, id="push-small"),
        pytest.param(
            PUSH, "push", {"title": "t", "body": "b", "data": {"k": "v" * 64}}, "payload_too_large", id="push-big"
        ),
        pytest.param(
            Capabilities(channels=("push",), max_body_chars=3), "push", {"body": "four"}, "too_long", id="push-body"
        ),
        pytest.param(
            EMAIL_TEXT_ONLY, "email", {"subject": "s", "html": "<p>h</p>"}, "html_unsupported", id="html-only"
        ),
        pytest.param(
            EMAIL_TEXT_ONLY,
            "email",
            {"subject": "s", "text": "", "html": "<p>h</p>"},
            "html_unsupported",
            id="empty-text",
        ),
        pytest.param(EMAIL_HTML, "email", {"subject": "s", "html": "<p>h</p>"}, None, id="html-provider"),
        pytest.param(
            Capabilities(channels=("webhook",), max_body_chars=1),
            "webhook",
            {"body": {"a": 1}},
            None,
            id="json-body-is-not-text",
        ),
    ],
)
def test_check(capabilities: Capabilities, channel: str, parts: dict[str, Any], code: str | None) -> None:
    given = envelope(channel, parts)
    fitted = check(given, capabilities)
    if code is None:
        assert fitted is given, "an envelope that fits is passed on as it is"
    else:
        assert isinstance(fitted, PermanentError)
        assert fitted.code == code
        assert not (fitted.suppress or fitted.remove_device or fitted.disable_endpoint)


def test_a_provider_without_html_gets_the_text_part_only() -> None:
    given = envelope("email", {"subject": "Hi", "text": "Hello", "html": "<p>Hello</p>"})
    fitted = check(given, EMAIL_TEXT_ONLY)
    assert isinstance(fitted, Envelope)
    assert fitted.parts == {"subject": "Hi", "text": "Hello"}
    assert fitted.signing_secrets == ["whsec_kept"] and fitted.message_id == given.message_id
    assert "html" in given.parts, "the caller's envelope is not changed"


def test_the_payload_is_measured_after_the_html_part_is_dropped() -> None:
    given = envelope("email", {"subject": "Hi", "text": "Hello", "html": "<p>" + "x" * 500 + "</p>"})
    capabilities = Capabilities(channels=("email",), max_payload_bytes=100)
    assert isinstance(check(given, capabilities), Envelope)
    html_capable = Capabilities(channels=("email",), supports_html=True, max_payload_bytes=100)
    refused = check(given, html_capable)
    assert isinstance(refused, PermanentError) and refused.code == "payload_too_large"


def test_measures() -> None:
    push = envelope("push", {"title": "Ü", "body": "b", "data": {1: None}})
    assert payload_bytes(push) == len('{"title":"Ü","body":"b","data":{"1":null}}'.encode())
    assert body_text(push) == "b"
    assert body_text(envelope("email", {"subject": "s", "text": "t", "body": "x"})) == "t"
    assert body_text(envelope("webhook", {"body": {"a": 1}})) is None


@pytest.mark.parametrize("type_name", sorted(PROVIDER_TYPES))
def test_every_provider_declares_what_check_needs(type_name: str) -> None:
    capabilities = provider_class(type_name).capabilities
    assert isinstance(capabilities, Capabilities)
    assert capabilities.channels
    assert capabilities.batch_size >= 1
    if "email" in capabilities.channels:
        assert capabilities.supports_html, "every email provider sends the HTML part today"
