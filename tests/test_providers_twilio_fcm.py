"""The Twilio (SMS) and FCM (push) providers, through the real SDKs, against local fakes of both APIs."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Provider, ProviderContext, build_provider
from notifyctl.providers.fcm import FcmProvider, data_strings, error_for_answer
from notifyctl.providers.transports.json_api import JsonAnswer
from notifyctl.providers.twilio import TwilioProvider, mask_phone
from tests.fakes import Answer, answer_reset, answer_stall
from tests.fakes import fcm as fcm_fake
from tests.fakes import twilio as twilio_fake
from tests.fakes.fcm import FakeFcm, ServiceAccount
from tests.fakes.twilio import FakeTwilio, twilio_error

PHONE = "+15551234567"
DEVICE = "device-token-1"

OpenTwilio = Callable[[dict[str, Any]], Awaitable[TwilioProvider]]


def make_envelope(channel: str, address: str, parts: dict[str, Any], delivery_id: int = 1) -> Envelope:
    return Envelope(
        delivery_id=delivery_id,
        run_id="run_1",
        channel=channel,
        user_id=f"user-{delivery_id}",
        address=address,
        template="welcome",
        template_version="v1",
        category="transactional",
        idempotency_key=f"user-{delivery_id}:welcome:evt-1",
        message_id=f"msg_{delivery_id}",
        parts=parts,
    )


def sms(address: str = PHONE, text: str = "Your code is 123456") -> Envelope:
    return make_envelope("sms", address, {"text": text})


def push(address: str = DEVICE, delivery_id: int = 1, data: dict[str, Any] | None = None) -> Envelope:
    parts = {"title": "Hello", "body": "Your order shipped", "data": data if data is not None else {"order": "42"}}
    return make_envelope("push", address, parts, delivery_id=delivery_id)


def context(tmp_path: Path, name: str, settings: dict[str, Any]) -> ProviderContext:
    return ProviderContext(name=name, settings=settings, db_path=tmp_path / "notifyctl.db", base_dir=tmp_path)


def dead_url() -> str:
    """The URL of a server that was listening a moment ago: connections are refused."""
    with FakeTwilio() as gone:
        url = gone.url
    return url


# -- Twilio -----------------------------------------------------------------------------------------


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
async def open_twilio(tmp_path: Path) -> AsyncIterator[OpenTwilio]:
    """Open a TwilioProvider with the given settings; closed at teardown."""
    opened: list[TwilioProvider] = []

    async def factory(settings: dict[str, Any]) -> TwilioProvider:
        provider = TwilioProvider(context(tmp_path, "sms", settings))
        await provider.open()
        opened.append(provider)
        return provider

    yield factory
    for provider in opened:
        await provider.close()


async def test_twilio_send_returns_the_message_sid(twilio: FakeTwilio, tmp_path: Path) -> None:
    callback = "https://hooks.example.com/twilio/status"
    provider = build_provider("twilio", context(tmp_path, "sms", twilio.provider_settings(status_callback=callback)))
    assert isinstance(provider, Provider)
    await provider.open()
    try:
        result = await provider.send(sms())
    finally:
        await provider.close()

    (accepted,) = twilio.sent
    assert result == SendResult(provider="sms", provider_message_id=accepted["Sid"], status_code=201)
    assert result.provider_message_id is not None and result.provider_message_id.startswith("SM")
    assert len(result.provider_message_id) == 34
    (request,) = twilio.message_requests
    form = {key: values[0] for key, values in parse_qs(request.body.decode()).items()}
    assert form == {"To": PHONE, "From": twilio.from_number, "Body": "Your code is 123456", "StatusCallback": callback}
    expected_auth = base64.b64encode(f"{twilio.account_sid}:{twilio.auth_token}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected_auth}"


async def test_twilio_messaging_service_sends_without_from(twilio: FakeTwilio, tmp_path: Path) -> None:
    service_sid = "MG" + "ab" * 16
    settings = twilio.provider_settings(from_number=None, messaging_service_sid=service_sid)
    provider = TwilioProvider(context(tmp_path, "sms", settings))
    await provider.open()
    try:
        result = await provider.send(sms())
    finally:
        await provider.close()
    (accepted,) = twilio.sent
    assert accepted["MessagingServiceSid"] == service_sid
    assert "From" not in accepted
    assert result.provider_message_id == accepted["Sid"]


@pytest.mark.parametrize(
    ("prepare", "envelope", "expected_type", "code", "suppress", "retry_after_s"),
    [
        pytest.param(
            lambda fake: fake.opt_out(PHONE), sms(), PermanentError, "21610", True, None, id="21610-opted-out-suppress"
        ),
        pytest.param(
            lambda fake: fake.make_invalid(PHONE),
            sms(),
            PermanentError,
            "21211",
            False,
            None,
            id="21211-invalid-number",
        ),
        pytest.param(
            lambda fake: None, sms(text="x" * 1601), PermanentError, "21617", False, None, id="21617-too-long"
        ),
        pytest.param(
            lambda fake: fake.script(twilio_error(400, 21614, "'To' number is not a valid mobile number")),
            sms(),
            PermanentError,
            "21614",
            False,
            None,
            id="21614-not-mobile",
        ),
        pytest.param(
            lambda fake: fake.script(twilio_fake.RATE_LIMITED), sms(), RateLimited, "20429", False, None, id="429"
        ),
        pytest.param(
            lambda fake: fake.script(twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "7"})),
            sms(),
            RateLimited,
            "20429",
            False,
            7.0,
            id="429-retry-after",
        ),
        pytest.param(
            lambda fake: fake.script(twilio_fake.SERVER_ERROR), sms(), TransientError, "20500", False, None, id="500"
        ),
        pytest.param(
            lambda fake: fake.script(twilio_fake.UNAVAILABLE), sms(), TransientError, "20503", False, None, id="503"
        ),
        pytest.param(
            lambda fake: fake.script(Answer(status=502, body=b"<html>Bad Gateway</html>")),
            sms(),
            TransientError,
            "502",
            False,
            None,
            id="502-not-json",
        ),
        pytest.param(
            lambda fake: fake.script(answer_reset()), sms(), OutcomeUnknown, "reset_after_send", False, None, id="reset"
        ),
    ],
)
async def test_twilio_errors_are_classified_after_exactly_one_request(
    twilio: FakeTwilio,
    open_twilio: OpenTwilio,
    prepare: Callable[[FakeTwilio], None],
    envelope: Envelope,
    expected_type: type[ProviderError],
    code: str,
    suppress: bool,
    retry_after_s: float | None,
) -> None:
    prepare(twilio)
    provider = await open_twilio(twilio.provider_settings())
    with pytest.raises(ProviderError) as caught:
        await provider.send(envelope)
    error = caught.value
    assert type(error) is expected_type
    assert error.code == code
    assert getattr(error, "suppress", False) is suppress
    if isinstance(error, TransientError):
        assert error.retry_after_s == retry_after_s
    assert len(twilio.message_requests) == 1, "the SDK must not retry"
    assert twilio.sent == []


async def test_twilio_error_messages_mask_the_number(twilio: FakeTwilio, open_twilio: OpenTwilio) -> None:
    twilio.make_invalid(PHONE)
    provider = await open_twilio(twilio.provider_settings())
    with pytest.raises(PermanentError) as caught:
        await provider.send(sms())
    assert PHONE not in str(caught.value)
    assert mask_phone(PHONE) in str(caught.value)


async def test_twilio_wrong_auth_token_is_permanent(twilio: FakeTwilio, open_twilio: OpenTwilio) -> None:
    provider = await open_twilio(twilio.provider_settings(auth_token="not-the-token"))
    with pytest.raises(PermanentError) as caught:
        await provider.send(sms())
    assert caught.value.code == "20003"
    assert "not-the-token" not in str(caught.value)


async def test_twilio_connection_refused_is_transient(twilio: FakeTwilio, open_twilio: OpenTwilio) -> None:
    provider = await open_twilio(twilio.provider_settings(base_url=dead_url()))
    with pytest.raises(TransientError) as caught:
        await provider.send(sms())
    assert type(caught.value) is TransientError
    assert caught.value.code == "connection"


async def test_twilio_timeout_after_the_request_is_unknown(twilio: FakeTwilio, open_twilio: OpenTwilio) -> None:
    twilio.script(answer_stall(5.0))
    provider = await open_twilio(twilio.provider_settings(timeout_s=0.3))
    with pytest.raises(OutcomeUnknown) as caught:
        await provider.send(sms())
    assert caught.value.code == "timeout_after_send"
    assert len(twilio.message_requests) == 1


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        pytest.param({"auth_token": "t", "from_number": "+15005550006"}, "providers.sms.account_sid", id="no-sid"),
        pytest.param({"account_sid": "AC1", "from_number": "+15005550006"}, "providers.sms.auth_token", id="no-token"),
        pytest.param({"account_sid": "AC1", "auth_token": "t"}, "providers.sms.from_number", id="no-sender"),
        pytest.param(
            {"account_sid": "AC1", "auth_token": "t", "from_number": "+1", "timeout_s": "soon"},
            "providers.sms.timeout_s",
            id="bad-timeout",
        ),
    ],
)
def test_twilio_settings_errors_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], key: str
) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError) as caught:
        TwilioProvider(context(tmp_path, "sms", settings))
    assert caught.value.key == key


def test_twilio_credentials_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "1" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "secret")
    provider = TwilioProvider(context(tmp_path, "sms", {"from_number": "+15005550006"}))
    assert provider.account_sid == "AC" + "1" * 32
    assert provider.capabilities.max_body_chars == 1600
    assert provider.capabilities.channels == ("sms",)
    assert provider.capabilities.idempotent is False


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        pytest.param("+15551234567", "+1******4567", id="nanp"),
        pytest.param("+447700900123", "+4*******0123", id="uk"),
        pytest.param("+123", "****", id="short"),
    ],
)
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


# -- FCM ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fcm_server() -> Iterator[FakeFcm]:
    # Module scope: one RSA key and one server for all FCM tests; `fcm` clears it per test.
    with FakeFcm() as fake:
        fake.service_account()
        yield fake


@pytest.fixture
def fcm(fcm_server: FakeFcm) -> FakeFcm:
    fcm_server.clear()
    return fcm_server


@pytest.fixture
def fcm_settings(fcm: FakeFcm, tmp_path: Path) -> dict[str, Any]:
    return fcm.provider_settings(fcm.write_service_account(tmp_path / "service-account.json"))


@pytest.fixture
async def fcm_provider(fcm_settings: dict[str, Any], tmp_path: Path) -> AsyncIterator[FcmProvider]:
    provider = FcmProvider(context(tmp_path, "push", fcm_settings))
    await provider.open()
    try:
        yield provider
    finally:
        await provider.close()


async def test_fcm_send_returns_the_message_name(fcm: FakeFcm, fcm_provider: FcmProvider) -> None:
    result = await fcm_provider.send(push())

    (accepted,) = fcm.sent
    assert result == SendResult(provider="push", provider_message_id=accepted["name"], status_code=200)
    assert accepted["name"].startswith(f"projects/{fcm.project_id}/messages/")
    assert accepted["message"] == {
        "token": DEVICE,
        "notification": {"title": "Hello", "body": "Your order shipped"},
        "data": {"order": "42"},
    }
    assert "validate_only" not in accepted
    (request,) = fcm.send_requests
    assert request.headers["Authorization"].startswith("Bearer ya29.fake-")
    assert len(fcm.token_requests) == 1


async def test_fcm_data_values_are_sent_as_strings(fcm: FakeFcm, fcm_provider: FcmProvider) -> None:
    data = {"text": "ünïcode", "count": 3, "ratio": 0.5, "flag": True, "nested": {"a": [1, 2]}, "nothing": None}
    await fcm_provider.send(push(data=data))
    (accepted,) = fcm.sent
    assert accepted["message"]["data"] == {
        "text": "ünïcode",
        "count": "3",
        "ratio": "0.5",
        "flag": "true",
        "nested": '{"a":[1,2]}',
        "nothing": "null",
    }
    assert data_strings({1: 2}) == {"1": "2"}


async def test_fcm_topic_address_sends_to_the_topic(fcm: FakeFcm, fcm_provider: FcmProvider) -> None:
    result = await fcm_provider.send(push("/topics/news-de"))
    (accepted,) = fcm.sent
    assert accepted["message"]["topic"] == "news-de"
    assert "token" not in accepted["message"]
    assert result.provider_message_id == accepted["name"]


@pytest.mark.parametrize(
    ("prepare", "envelope", "expected_type", "code", "remove_device", "retry_after_s"),
    [
        pytest.param(
            lambda fake: fake.unregister(DEVICE), push(), PermanentError, "UNREGISTERED", True, None, id="unregistered"
        ),
        pytest.param(
            lambda fake: fake.make_invalid(DEVICE),
            push(),
            PermanentError,
            "INVALID_ARGUMENT",
            True,
            None,
            id="invalid-token",
        ),
        pytest.param(
            lambda fake: fake.script_sends(fcm_fake.SENDER_ID_MISMATCH),
            push(),
            PermanentError,
            "SENDER_ID_MISMATCH",
            True,
            None,
            id="sender-id-mismatch",
        ),
        pytest.param(
            lambda fake: None,
            push(data={"google.reserved": "x"}),
            PermanentError,
            "INVALID_ARGUMENT",
            False,
            None,
            id="invalid-payload",
        ),
        pytest.param(
            lambda fake: fake.script_sends(fcm_fake.QUOTA_EXCEEDED),
            push(),
            RateLimited,
            "QUOTA_EXCEEDED",
            False,
            None,
            id="quota-exceeded",
        ),
        pytest.param(
            lambda fake: fake.script_sends(
                fcm_fake.fcm_error(429, "RESOURCE_EXHAUSTED", "slow down", "QUOTA_EXCEEDED", {"Retry-After": "30"})
            ),
            push(),
            RateLimited,
            "QUOTA_EXCEEDED",
            False,
            30.0,
            id="quota-exceeded-retry-after",
        ),
        pytest.param(
            lambda fake: fake.script_sends(fcm_fake.UNAVAILABLE),
            push(),
            TransientError,
            "UNAVAILABLE",
            False,
            None,
            id="503-unavailable",
        ),
        pytest.param(
            lambda fake: fake.script_sends(fcm_fake.INTERNAL),
            push(),
            TransientError,
            "INTERNAL",
            False,
            None,
            id="500-internal",
        ),
        pytest.param(
            lambda fake: fake.script_sends(answer_reset()),
            push(),
            OutcomeUnknown,  # the request was written: FCM may have the message
            "reset_after_send",
            False,
            None,
            id="reset",
        ),
    ],
)
async def test_fcm_errors_are_classified_after_exactly_one_request(
    fcm: FakeFcm,
    fcm_provider: FcmProvider,
    prepare: Callable[[FakeFcm], None],
    envelope: Envelope,
    expected_type: type[ProviderError],
    code: str,
    remove_device: bool,
    retry_after_s: float | None,
) -> None:
    prepare(fcm)
    with pytest.raises(ProviderError) as caught:
        await fcm_provider.send(envelope)
    error = caught.value
    assert type(error) is expected_type
    assert error.code == code
    assert getattr(error, "remove_device", False) is remove_device
    if isinstance(error, TransientError):
        assert error.retry_after_s == retry_after_s
    assert len(fcm.send_requests) == 1, "the SDK must not retry"
    assert fcm.sent == []


@pytest.mark.parametrize(
    ("prepare", "token_gone", "config_suspect"),
    [
        pytest.param(lambda fake: fake.unregister(DEVICE), True, None, id="unregistered-is-churn"),
        pytest.param(
            lambda fake: fake.register_elsewhere(DEVICE),
            False,
            "the service-account key or project_id of another Firebase project than the app's",
            id="sender-id-mismatch-may-be-the-configuration",
        ),
        pytest.param(lambda fake: fake.make_invalid(DEVICE), False, None, id="invalid-token"),
    ],
)
async def test_fcm_says_which_token_errors_are_churn_and_which_a_wrong_project_also_gives(
    fcm: FakeFcm,
    fcm_provider: FcmProvider,
    prepare: Callable[[FakeFcm], None],
    token_gone: bool,
    config_suspect: str | None,
) -> None:
    prepare(fcm)
    with pytest.raises(PermanentError) as caught:
        await fcm_provider.send(push())
    assert caught.value.remove_device
    assert (caught.value.token_gone, caught.value.config_suspect) == (token_gone, config_suspect)


async def test_fcm_batch_answers_per_message(fcm: FakeFcm, fcm_provider: FcmProvider) -> None:
    fcm.unregister("stale")
    envelopes = [push("device-a", 1), push("stale", 2), push("device-c", 3)]

    outcomes = await fcm_provider.send_batch(envelopes)

    assert [type(outcome) for outcome in outcomes] == [SendResult, PermanentError, SendResult]
    first, failed, third = outcomes
    assert isinstance(failed, PermanentError) and failed.remove_device and failed.code == "UNREGISTERED"
    by_token = {entry["message"]["token"]: entry["name"] for entry in fcm.sent}
    assert isinstance(first, SendResult) and first.provider_message_id == by_token["device-a"]
    assert isinstance(third, SendResult) and third.provider_message_id == by_token["device-c"]
    assert len(fcm.send_requests) == 3
    assert len(fcm.token_requests) == 1


async def test_fcm_batch_refuses_an_unencodable_message_alone(fcm: FakeFcm, fcm_provider: FcmProvider) -> None:
    outcomes = await fcm_provider.send_batch([push("device-a", 1), push("/topics/bad topic!", 2)])
    ok, bad = outcomes
    assert isinstance(ok, SendResult)
    assert isinstance(bad, PermanentError) and bad.code == "INVALID_MESSAGE"
    assert len(fcm.send_requests) == 1


async def test_fcm_expired_token_is_refreshed_before_sending(fcm: FakeFcm, fcm_provider: FcmProvider) -> None:
    await fcm_provider.send(push())
    fcm_provider._credential.expiry = None
    fcm_provider._credential.token = None
    fcm.revoke_access_tokens()
    await fcm_provider.send(push())
    assert len(fcm.token_requests) == 2
    assert len(fcm.send_requests) == 2
    assert len(fcm.sent) == 2


async def test_fcm_connection_refused_is_transient(fcm: FakeFcm, fcm_settings: dict[str, Any], tmp_path: Path) -> None:
    provider = FcmProvider(context(tmp_path, "push", {**fcm_settings, "base_url": dead_url()}))
    await provider.open()
    try:
        with pytest.raises(TransientError) as caught:
            await provider.send(push())
    finally:
        await provider.close()
    assert type(caught.value) is TransientError
    assert caught.value.code == "connection"


async def test_fcm_untrusted_service_account_is_permanent(fcm: FakeFcm, tmp_path: Path) -> None:
    stranger = fcm.new_service_account()
    key_file = fcm.write_service_account(tmp_path / "stranger.json", stranger)
    provider = FcmProvider(context(tmp_path, "push", fcm.provider_settings(key_file)))
    await provider.open()
    try:
        with pytest.raises(PermanentError) as caught:
            await provider.send(push())
    finally:
        await provider.close()
    assert caught.value.code == "credentials"
    assert fcm.send_requests == []
    assert len(fcm.token_requests) == 1


async def test_fcm_token_endpoint_unreachable_is_transient(fcm: FakeFcm, tmp_path: Path) -> None:
    account = fcm.trust(fcm.new_service_account())
    unreachable = ServiceAccount(
        info={**account.info, "token_uri": dead_url() + "/token"}, public_key=account.public_key
    )
    key_file = fcm.write_service_account(tmp_path / "service-account.json", unreachable)
    provider = FcmProvider(context(tmp_path, "push", fcm.provider_settings(key_file)))
    await provider.open()
    try:
        with pytest.raises(TransientError) as caught:
            await provider.send(push())
    finally:
        await provider.close()
    assert caught.value.code == "connection"
    assert fcm.send_requests == []


async def test_fcm_refused_access_token_is_transient_and_replaced_on_the_next_attempt(
    fcm: FakeFcm, fcm_provider: FcmProvider
) -> None:
    await fcm_provider.send(push("device-a", 1))
    fcm.revoke_access_tokens()  # FCM stops accepting a token that has not expired here
    with pytest.raises(TransientError) as caught:
        await fcm_provider.send(push("device-b", 2))
    assert type(caught.value) is TransientError and caught.value.code == "UNAUTHENTICATED"
    assert len(fcm.send_requests) == 2, "no hidden re-send after a refresh"
    assert len(fcm.token_requests) == 1
    await fcm_provider.send(push("device-b", 2))
    assert len(fcm.token_requests) == 2
    assert [entry["message"]["token"] for entry in fcm.sent] == ["device-a", "device-b"]


async def test_fcm_timeout_after_the_request_is_unknown(
    fcm: FakeFcm, fcm_settings: dict[str, Any], tmp_path: Path
) -> None:
    provider = FcmProvider(context(tmp_path, "push", {**fcm_settings, "timeout_s": 0.3}))
    await provider.open()
    try:
        await provider.send(push("device-a", 1))  # the token first, so the stall hits messages:send
        fcm.script_sends(answer_stall(1.0))
        with pytest.raises(OutcomeUnknown) as caught:
            await provider.send(push("device-b", 2))
    finally:
        await provider.close()
    assert caught.value.code == "timeout_after_send"
    assert len(fcm.send_requests) == 2


async def test_fcm_project_comes_from_the_key_file_and_a_wrong_one_is_permanent(
    fcm: FakeFcm, fcm_settings: dict[str, Any], tmp_path: Path
) -> None:
    from_key_file = FcmProvider(context(tmp_path, "push", {**fcm_settings, "project_id": None}))
    wrong = FcmProvider(context(tmp_path, "push-wrong", {**fcm_settings, "project_id": "someone-else"}))
    await from_key_file.open()
    await wrong.open()
    try:
        assert isinstance(await from_key_file.send(push()), SendResult)
        with pytest.raises(PermanentError) as caught:
            await wrong.send(push())
    finally:
        await from_key_file.close()
        await wrong.close()
    assert caught.value.code == "PERMISSION_DENIED"
    assert len(fcm.sent) == 1


async def test_fcm_installation_ids_go_in_fid(fcm: FakeFcm, fcm_settings: dict[str, Any], tmp_path: Path) -> None:
    provider = FcmProvider(context(tmp_path, "push", {**fcm_settings, "device_id_field": "fid"}))
    await provider.open()
    try:
        await provider.send(push("installation-1"))
    finally:
        await provider.close()
    (accepted,) = fcm.sent
    assert accepted["message"]["fid"] == "installation-1" and "token" not in accepted["message"]


async def test_fcm_batch_shares_a_failed_token_fetch_but_not_a_local_refusal(fcm: FakeFcm, tmp_path: Path) -> None:
    key_file = fcm.write_service_account(tmp_path / "stranger.json", fcm.new_service_account())
    provider = FcmProvider(context(tmp_path, "push", fcm.provider_settings(key_file)))
    await provider.open()
    try:
        outcomes = await provider.send_batch([push("device-a", 1), push("", 2), push("device-c", 3)])
    finally:
        await provider.close()
    assert [getattr(outcome, "code", None) for outcome in outcomes] == ["credentials", "INVALID_MESSAGE", "credentials"]
    assert all(isinstance(outcome, PermanentError) for outcome in outcomes)
    assert fcm.send_requests == []


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected_type", "code", "retry_after_s"),
    [
        # body: the answer's JSON as JsonApi parsed it (None: empty, or not JSON, like a proxy's HTML page)
        pytest.param(502, None, {}, TransientError, "HTTP_502", None, id="502-html"),
        pytest.param(503, None, {"Retry-After": "7"}, TransientError, "UNAVAILABLE", 7.0, id="503-empty"),
        pytest.param(408, None, {}, TransientError, "HTTP_408", None, id="408"),
        pytest.param(429, None, {"Retry-After": "12"}, RateLimited, "RESOURCE_EXHAUSTED", 12.0, id="429-empty"),
        pytest.param(404, None, {}, PermanentError, "NOT_FOUND", None, id="404-empty"),
        pytest.param(418, {}, {}, PermanentError, "HTTP_418", None, id="418"),
        pytest.param(
            401,
            fcm_fake.fcm_error_body(401, "UNAUTHENTICATED", "Auth error from APNS", "THIRD_PARTY_AUTH_ERROR"),
            {},
            PermanentError,
            "THIRD_PARTY_AUTH_ERROR",
            None,
            id="third-party-auth",
        ),
    ],
)
def test_fcm_answers_without_an_fcm_error_document(
    status: int,
    body: Any,
    headers: dict[str, str],
    expected_type: type[ProviderError],
    code: str,
    retry_after_s: float | None,
) -> None:
    error = error_for_answer(JsonAnswer(status, headers, body))
    assert type(error) is expected_type
    assert error.code == code
    assert getattr(error, "remove_device", False) is False
    if isinstance(error, TransientError):
        assert error.retry_after_s == retry_after_s


@pytest.mark.parametrize(
    ("write", "key"),
    [
        pytest.param(None, "providers.push.credentials", id="missing-file"),
        pytest.param(b"{not json", "providers.push.credentials", id="not-json"),
        pytest.param(b'{"type": "authorized_user"}', "providers.push.credentials", id="not-a-service-account"),
    ],
)
async def test_fcm_bad_credentials_at_open_name_the_key(
    fcm: FakeFcm, tmp_path: Path, write: bytes | None, key: str
) -> None:
    key_file = tmp_path / "service-account.json"
    if write is not None:
        key_file.write_bytes(write)
    provider = FcmProvider(context(tmp_path, "push", fcm.provider_settings(key_file)))
    with pytest.raises(ConfigError) as caught:
        await provider.open()
    assert caught.value.key == key
    await provider.close()


def test_fcm_needs_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(ConfigError) as caught:
        FcmProvider(context(tmp_path, "push", {}))
    assert caught.value.key == "providers.push.credentials"


async def test_fcm_providers_with_the_same_settings_work_side_by_side(
    fcm: FakeFcm, fcm_provider: FcmProvider, fcm_settings: dict[str, Any], tmp_path: Path
) -> None:
    # No global state (firebase-admin's named apps are gone): a twin opens, sends and closes alone.
    twin = FcmProvider(context(tmp_path, "push", fcm_settings))
    await twin.open()
    try:
        assert isinstance(await twin.send(push("device-a", 1)), SendResult)
    finally:
        await twin.close()
    assert isinstance(await fcm_provider.send(push("device-b", 2)), SendResult)
    assert sorted(entry["message"]["token"] for entry in fcm.sent) == ["device-a", "device-b"]


def test_fcm_capabilities(tmp_path: Path) -> None:
    provider = build_provider("fcm", context(tmp_path, "push", {"credentials": "service-account.json"}))
    assert isinstance(provider, FcmProvider) and isinstance(provider, Provider)
    assert FcmProvider.capabilities.channels == ("push",)
    assert FcmProvider.capabilities.batch_size == 500
    assert FcmProvider.capabilities.max_payload_bytes == 4096
    assert FcmProvider.capabilities.idempotent is False
