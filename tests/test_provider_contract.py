"""One contract, every provider: what `send()` returns or raises, against each provider's local server.

success → a SendResult carrying the id the server gave the message; HTTP 429 (or the provider's
own throttling answer) → RateLimited; a server-side failure (5xx) → TransientError; a bad
recipient → PermanentError. And no hidden retries: the server sees exactly one request per send.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from notifyctl.errors import PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.security.signing import webhook_id
from tests.fakes import answer_json
from tests.fakes import fcm as fcm_fake
from tests.fakes import twilio as twilio_fake
from tests.fakes.fcm import FakeFcm
from tests.fakes.moto import SEND_EMAIL_PATH, FakeSesApi, MotoSes, ses_error
from tests.fakes.postmark import FakePostmark, postmark_error
from tests.fakes.smtp import FakeSmtp
from tests.fakes.twilio import FakeTwilio
from tests.provider_fixtures import OpenProvider, postmark_settings, ses_settings, smtp_settings, webhook_settings
from tests.webhook_sink import SINK_SECRET, WebhookSink, respond

pytest_plugins = ("tests.provider_fixtures",)

EMAIL = "rcpt@example.org"
PHONE = "+15551234567"
DEVICE = "device-token-1"
MESSAGE_ID = webhook_id("u1:contract:evt-1")

CASES = ("success", "rate-limited", "server-error", "bad-recipient")

PARTS: dict[str, dict[str, Any]] = {
    "email": {"subject": "Hello Ada", "text": "Hi Ada.", "html": "<p>Hi Ada.</p>"},
    "sms": {"text": "Your code is 123456"},
    "push": {"title": "Hello", "body": "Your order shipped", "data": {"order": "42"}},
    "inapp": {"title": "Hello", "body": "Your order shipped", "data": {"order": "42"}},
    "webhook": {"body": {"type": "order.shipped", "order_id": "42"}},
}


def envelope(channel: str, address: str, *, user_id: str | None = "u1") -> Envelope:
    return Envelope(
        delivery_id=1,
        run_id="run_contract",
        channel=channel,
        user_id=user_id,
        address=address,
        template="contract",
        template_version="v1",
        category="transactional",
        idempotency_key="u1:contract:evt-1",
        message_id=MESSAGE_ID,
        parts=PARTS[channel],
        signing_secrets=[SINK_SECRET] if channel == "webhook" else [],
    )


@dataclass
class Setup:
    """One provider wired to its server for one case of the contract."""

    type_name: str
    settings: dict[str, Any]
    envelope: Envelope
    requests_at_server: Callable[[], int]
    accepted_id: Callable[[], str | None]  # the id the server gave the message it accepted
    arm: Callable[[], None] = lambda: None  # runs after open(), before send()
    expected_requests: int = 1


def _only(ids: list[str]) -> str:
    [single] = ids
    return single


def ses_setup(request: pytest.FixtureRequest, case: str) -> Setup:
    if case in ("success", "bad-recipient"):
        # moto itself: it records what was sent, and refuses an address without a domain.
        moto: MotoSes = request.getfixturevalue("moto_ses")
        address = EMAIL if case == "success" else "not-an-address"
        return Setup(
            "ses",
            ses_settings(moto.url),
            envelope("email", address),
            lambda: moto.send_requests,
            lambda: _only([m.message_id for m in moto.sent_messages()]),
        )
    # moto never throttles or fails: these answers come from the scripted SESv2 endpoint.
    api: FakeSesApi = request.getfixturevalue("ses_api")
    answer = (
        ses_error(400, "TooManyRequestsException") if case == "rate-limited" else ses_error(503, "ServiceUnavailable")
    )
    return Setup(
        "ses",
        ses_settings(api.url, timeout_s=2),
        envelope("email", EMAIL),
        lambda: len(api.requests_to(SEND_EMAIL_PATH)),
        lambda: None,
        arm=lambda: api.script(answer),
    )


def smtp_setup(request: pytest.FixtureRequest, case: str) -> Setup:
    server: FakeSmtp = request.getfixturevalue("smtp_server")
    arms: dict[str, Callable[[], None]] = {
        "success": lambda: None,
        "rate-limited": lambda: server.script_rcpt("451 4.7.1 Rate limit exceeded, slow down"),
        # SMTP's "server error" is a 4xx reply; its 5xx replies are permanent by definition.
        "server-error": lambda: server.script_data("451 4.3.0 Local error in processing"),
        "bad-recipient": lambda: server.refuse(EMAIL),
    }

    def accepted() -> str:
        message_id = _only([str(mail.message()["Message-ID"]) for mail in server.messages])
        return message_id.strip("<>")

    # One MAIL FROM per attempted message: a retry inside the client would show as a second one.
    return Setup(
        "smtp", smtp_settings(server), envelope("email", EMAIL), lambda: server.transactions, accepted, arm=arms[case]
    )


def postmark_setup(request: pytest.FixtureRequest, case: str) -> Setup:
    api: FakePostmark = request.getfixturevalue("postmark_api")
    arms: dict[str, Callable[[], None]] = {
        "success": lambda: None,
        "rate-limited": lambda: api.script(postmark_error(429, 429, "Rate limit exceeded", {"Retry-After": "3"})),
        "server-error": lambda: api.script(answer_json(503, {})),
        "bad-recipient": lambda: api.make_inactive(EMAIL),
    }
    return Setup(
        "postmark",
        postmark_settings(api),
        envelope("email", EMAIL),
        lambda: len(api.requests_to("/email")),
        lambda: _only([str(m["MessageID"]) for m in api.sent]),
        arm=arms[case],
    )


def twilio_setup(request: pytest.FixtureRequest, case: str) -> Setup:
    api: FakeTwilio = request.getfixturevalue("twilio_api")
    arms: dict[str, Callable[[], None]] = {
        "success": lambda: None,
        "rate-limited": lambda: api.script(twilio_fake.RATE_LIMITED),
        "server-error": lambda: api.script(twilio_fake.UNAVAILABLE),
        "bad-recipient": lambda: api.make_invalid(PHONE),
    }
    return Setup(
        "twilio",
        api.provider_settings(timeout_s=2),
        envelope("sms", PHONE),
        lambda: len(api.message_requests),
        lambda: _only([m["Sid"] for m in api.sent]),
        arm=arms[case],
    )


def fcm_setup(request: pytest.FixtureRequest, case: str) -> Setup:
    api: FakeFcm = request.getfixturevalue("fcm_api")
    key_file: Path = request.getfixturevalue("fcm_key_file")
    arms: dict[str, Callable[[], None]] = {
        "success": lambda: None,
        "rate-limited": lambda: api.script_sends(fcm_fake.QUOTA_EXCEEDED),
        "server-error": lambda: api.script_sends(fcm_fake.UNAVAILABLE),
        "bad-recipient": lambda: api.unregister(DEVICE),
    }
    # Counted: messages:send only; the OAuth token request before the first send is not a send.
    return Setup(
        "fcm",
        api.provider_settings(key_file, timeout_s=2),
        envelope("push", DEVICE),
        lambda: len(api.send_requests),
        lambda: _only([m["name"] for m in api.sent]),
        arm=arms[case],
    )


def webhook_setup(request: pytest.FixtureRequest, case: str) -> Setup:
    sink: WebhookSink = request.getfixturevalue("webhook_sink")
    sink.on_path("/gone", respond(410))
    arms: dict[str, Callable[[], None]] = {
        "success": lambda: None,
        "rate-limited": lambda: sink.script(respond(429)),
        "server-error": lambda: sink.script(respond(503)),
        "bad-recipient": lambda: None,
    }
    url = sink.url("/gone" if case == "bad-recipient" else "/hook")

    def accepted() -> str | None:
        [received] = sink.requests
        assert received.verified
        return received.webhook_id

    return Setup(
        "webhook", webhook_settings(), envelope("webhook", url), lambda: len(sink.requests), accepted, arm=arms[case]
    )


def outbox_setup(request: pytest.FixtureRequest, case: str) -> Setup:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    folder = tmp_path / "outbox"
    address = EMAIL if case == "success" else "not an address"

    def accepted() -> str:
        return _only([path.name for path in folder.glob("*.eml")])

    # For a local writer the "request" is the file: a refused message leaves none behind.
    return Setup(
        "outbox",
        {"path": "outbox"},
        envelope("email", address),
        lambda: len(list(folder.glob("*.eml"))),
        accepted,
        expected_requests=1 if case == "success" else 0,
    )


def inapp_setup(request: pytest.FixtureRequest, case: str) -> Setup:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    db_path = tmp_path / "notifyctl.db"

    def inbox_ids() -> list[str]:
        with sqlite3.connect(db_path) as conn:
            return [str(row[0]) for row in conn.execute("SELECT id FROM inbox")]

    def lock_database() -> None:
        # Another writer holds the database: SQLite's "server busy".
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")

        def release() -> None:
            holder.execute("ROLLBACK")
            holder.close()

        request.addfinalizer(release)

    message = envelope("inapp", "", user_id=None) if case == "bad-recipient" else envelope("inapp", "u1")
    return Setup(
        "inapp",
        {"busy_timeout_ms": 100},
        message,
        lambda: len(inbox_ids()),
        lambda: _only(inbox_ids()),
        arm=lock_database if case == "server-error" else lambda: None,
        expected_requests=1 if case == "success" else 0,
    )


SETUPS: dict[str, Callable[[pytest.FixtureRequest, str], Setup]] = {
    "ses": ses_setup,
    "smtp": smtp_setup,
    "postmark": postmark_setup,
    "twilio": twilio_setup,
    "fcm": fcm_setup,
    "webhook": webhook_setup,
    "outbox": outbox_setup,
    "inapp": inapp_setup,
}

NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("outbox", "rate-limited"): "a local folder never rate limits",
    ("outbox", "server-error"): "no server; ENOSPC → TransientError is covered in test_providers_embedded",
    ("inapp", "rate-limited"): "the local SQLite inbox never rate limits",
}
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def contract_params() -> list[Any]:
    params = []
    for provider in SETUPS:
        for case in CASES:
            marks: list[pytest.MarkDecorator] = []
            if (provider, case) in NOT_APPLICABLE:
                marks.append(pytest.mark.skip(reason=NOT_APPLICABLE[provider, case]))
            if (provider, case) in KNOWN_GAPS:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[provider, case]))
            params.append(pytest.param(provider, case, id=f"{provider}-{case}", marks=marks))
    return params


EXPECTED_ERROR: dict[str, type[ProviderError]] = {
    "rate-limited": RateLimited,
    "server-error": TransientError,
    "bad-recipient": PermanentError,
}


@pytest.mark.parametrize(("provider_type", "case"), contract_params())
async def test_provider_contract(
    request: pytest.FixtureRequest, open_provider: OpenProvider, provider_type: str, case: str
) -> None:
    setup = SETUPS[provider_type](request, case)
    provider = await open_provider(setup.type_name, f"{provider_type}-account", setup.settings)
    setup.arm()

    if case == "success":
        result = await provider.send(setup.envelope)
        assert isinstance(result, SendResult)
        assert result.provider == f"{provider_type}-account"
        assert result.provider_message_id
        assert result.provider_message_id == setup.accepted_id()
    else:
        with pytest.raises(ProviderError) as caught:
            await provider.send(setup.envelope)
        expected = EXPECTED_ERROR[case]
        assert isinstance(caught.value, expected), repr(caught.value)
        if case == "server-error":
            assert not isinstance(caught.value, RateLimited)
        if case == "bad-recipient":
            assert caught.value.code

    # No SDK-internal retries: one send, one request at the server.
    assert setup.requests_at_server() == setup.expected_requests
