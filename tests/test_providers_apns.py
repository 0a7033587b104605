"""The APNs provider (HTTP/2, ES256 provider token) against a local HTTP/2 TLS server that behaves
like APNs (tests/fakes/apns.py): headers, payload, token reuse and refresh, and every answer's meaning."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.apns import ApnsProvider, apns_id
from notifyctl.providers.base import ProviderContext, build_provider
from tests.fakes.apns import ApnsAnswer, FakeApns

TOKEN = "a" * 64
OTHER = "b" * 64


def push(token: str = TOKEN, delivery_id: int = 1, parts: dict[str, Any] | None = None) -> Envelope:
    return Envelope(
        delivery_id=delivery_id,
        run_id="run_1",
        channel="push",
        user_id=f"user-{delivery_id}",
        address=f"apns:{token}",
        template="order_shipped",
        template_version="v1",
        category="transactional",
        idempotency_key=f"user-{delivery_id}:order_shipped:evt-1",
        message_id=f"msg_{delivery_id}",
        parts=parts if parts is not None else {"title": "Hello", "body": "Shipped", "data": {"order": "42"}},
    )


@pytest.fixture(scope="module")
def apns_server() -> Iterator[FakeApns]:
    with FakeApns() as fake:
        yield fake


@pytest.fixture
def apns(apns_server: FakeApns) -> FakeApns:
    apns_server.clear()
    return apns_server


def settings_for(apns: FakeApns, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    settings = apns.provider_settings(apns.write_key(tmp_path / "AuthKey.p8"), apns.write_ca(tmp_path / "ca.pem"))
    return {**settings, "timeout_s": 2, **overrides}


@pytest.fixture
async def provider(apns: FakeApns, tmp_path: Path) -> AsyncIterator[ApnsProvider]:
    context = ProviderContext(
        name="apns", settings=settings_for(apns, tmp_path), db_path=tmp_path / "db", base_dir=tmp_path
    )
    built = build_provider("apns", context)
    assert isinstance(built, ApnsProvider)
    await built.open()
    yield built
    await built.close()


async def test_a_push_is_sent_with_apples_headers_and_payload(apns: FakeApns, provider: ApnsProvider) -> None:
    result = await provider.send(push())

    (request,) = apns.sent
    assert request.token == TOKEN
    assert request.json() == {"aps": {"alert": {"title": "Hello", "body": "Shipped"}}, "order": "42"}
    headers = request.headers
    assert headers["apns-topic"] == apns.topic
    assert headers["apns-push-type"] == "alert" and headers["apns-priority"] == "10"
    assert headers["apns-id"] == str(uuid.UUID(headers["apns-id"])) == apns_id("msg_1")
    assert int(headers["apns-expiration"]) > 0
    claims = jwt.decode(headers["authorization"].split()[1], options={"verify_signature": False})
    assert claims["iss"] == apns.team_id
    assert result == SendResult(provider="apns", provider_message_id=apns_id("msg_1"), status_code=200)


async def test_without_title_and_body_it_is_a_background_push(apns: FakeApns, provider: ApnsProvider) -> None:
    await provider.send(push(parts={"data": {"sync": True, "collapse_id": "inbox"}}))

    (request,) = apns.sent
    assert request.json() == {"aps": {"content-available": 1}, "sync": True, "collapse_id": "inbox"}
    assert request.headers["apns-push-type"] == "background" and request.headers["apns-priority"] == "5"
    assert request.headers["apns-collapse-id"] == "inbox"


async def test_many_pushes_share_one_connection_and_one_provider_token(apns: FakeApns, provider: ApnsProvider) -> None:
    connections_before = apns.connections
    outcomes = await provider.send_batch([push(f"{i:064x}", delivery_id=i) for i in range(1, 51)])

    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    assert len(apns.sent) == 50
    assert apns.connections - connections_before == 1  # 50 concurrent streams of one HTTP/2 connection
    assert len({request.headers["authorization"] for request in apns.sent}) == 1
    assert len({request.headers["apns-id"] for request in apns.sent}) == 50


async def test_an_expired_provider_token_is_replaced_on_the_next_attempt(
    apns: FakeApns, provider: ApnsProvider
) -> None:
    await provider.send(push())
    apns.expire_tokens()

    with pytest.raises(TransientError) as refused:
        await provider.send(push())
    assert refused.value.code == "ExpiredProviderToken"
    result = await provider.send(push())  # the pipeline's retry: a new token, accepted

    assert result.status_code == 200
    first, expired, retried = apns.requests
    assert (expired.status, expired.reason) == (403, "ExpiredProviderToken")
    assert expired.headers["authorization"] == first.headers["authorization"]
    assert retried.headers["authorization"] != expired.headers["authorization"]


ANSWERS = [
    pytest.param(ApnsAnswer(429, "TooManyRequests"), RateLimited, "TooManyRequests", id="429"),
    pytest.param(ApnsAnswer(500, "InternalServerError"), TransientError, "InternalServerError", id="500"),
    pytest.param(ApnsAnswer(503, "ServiceUnavailable"), TransientError, "ServiceUnavailable", id="503"),
    pytest.param(ApnsAnswer(413, "PayloadTooLarge"), PermanentError, "PayloadTooLarge", id="413"),
    pytest.param(ApnsAnswer(400, "BadTopic"), PermanentError, "BadTopic", id="other-4xx"),
    pytest.param(ApnsAnswer(403, "InvalidProviderToken"), PermanentError, "InvalidProviderToken", id="bad-key"),
    pytest.param(ApnsAnswer(stall_s=5), OutcomeUnknown, "timeout_after_send", id="timeout-after-send"),
]


@pytest.mark.parametrize(("answer", "error_class", "code"), ANSWERS)
async def test_each_answer_means_one_outcome(
    apns: FakeApns, provider: ApnsProvider, answer: ApnsAnswer, error_class: type[ProviderError], code: str
) -> None:
    apns.script(answer)

    with pytest.raises(ProviderError) as raised:
        await provider.send(push())

    assert type(raised.value) is error_class and raised.value.code == code
    assert len(apns.requests) == 1  # one request, no retry inside the provider
    if isinstance(raised.value, PermanentError):
        assert not raised.value.remove_device and not raised.value.token_gone


async def test_an_unregistered_token_is_gone_and_bad_device_token_is_suspect(
    apns: FakeApns, provider: ApnsProvider
) -> None:
    apns.unregister(TOKEN)
    with pytest.raises(PermanentError) as gone:
        await provider.send(push(TOKEN))
    apns.wrong_environment = True  # what a sandbox token sent to production gets
    with pytest.raises(PermanentError) as bad:
        await provider.send(push(OTHER))

    assert (gone.value.code, gone.value.token_gone, gone.value.remove_device) == ("Unregistered", True, True)
    assert gone.value.config_suspect is None
    assert (bad.value.code, bad.value.token_gone, bad.value.remove_device) == ("BadDeviceToken", True, True)
    assert bad.value.config_suspect is not None and "sandbox" in bad.value.config_suspect


async def test_a_payload_over_4_kb_is_refused_before_sending(apns: FakeApns, provider: ApnsProvider) -> None:
    with pytest.raises(PermanentError) as refused:
        await provider.send(push(parts={"title": "Hi", "body": "x" * 4100}))

    assert refused.value.code == "payload_too_large"
    assert apns.requests == []


async def test_a_refused_connection_is_not_sent(apns: FakeApns, tmp_path: Path) -> None:
    settings = settings_for(apns, tmp_path, host="https://127.0.0.1:9")
    provider = ApnsProvider(ProviderContext(name="apns", settings=settings, db_path=tmp_path / "db", base_dir=tmp_path))
    await provider.open()
    try:
        with pytest.raises(TransientError) as refused:
            await provider.send(push())
    finally:
        await provider.close()
    assert refused.value.code == "connection"


async def test_an_untrusted_server_certificate_is_not_sent_to(apns: FakeApns, tmp_path: Path) -> None:
    settings = settings_for(apns, tmp_path)
    del settings["ca_file"]  # the system's CAs do not know the test CA
    provider = ApnsProvider(ProviderContext(name="apns", settings=settings, db_path=tmp_path / "db", base_dir=tmp_path))
    await provider.open()
    try:
        with pytest.raises(TransientError):
            await provider.send(push())
    finally:
        await provider.close()
    assert apns.requests == []


@pytest.mark.parametrize(
    ("override", "key"),
    [
        pytest.param({"key_id": ""}, "providers.apns.key_id", id="no-key-id"),
        pytest.param({"host": "http://127.0.0.1:1"}, "providers.apns.host", id="plain-http"),
        pytest.param({"priority": 7}, "providers.apns.priority", id="bad-priority"),
    ],
)
def test_settings_are_checked(apns: FakeApns, tmp_path: Path, override: dict[str, Any], key: str) -> None:
    settings = {**settings_for(apns, tmp_path), **override}
    with pytest.raises(ConfigError) as refused:
        ApnsProvider(ProviderContext(name="apns", settings=settings, db_path=tmp_path / "db", base_dir=tmp_path))
    assert key in str(refused.value)


async def test_a_key_that_cannot_sign_is_a_config_error(apns: FakeApns, tmp_path: Path) -> None:
    settings = settings_for(apns, tmp_path)
    Path(settings["key_file"]).write_text("not a key")
    provider = ApnsProvider(ProviderContext(name="apns", settings=settings, db_path=tmp_path / "db", base_dir=tmp_path))
    with pytest.raises(ConfigError, match="key_file"):
        await provider.open()
