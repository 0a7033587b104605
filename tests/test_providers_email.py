"""The email providers (SES, SMTP, Postmark) through their real SDKs against local servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Provider, ProviderContext, provider_class
from notifyctl.providers.email.postmark import PostmarkProvider
from notifyctl.providers.email.ses import SesProvider
from notifyctl.providers.email.smtp import SmtpProvider
from tests.fakes import Answer, answer_json, answer_reset, answer_stall
from tests.fakes.moto import SEND_EMAIL_PATH, FakeSesApi, MotoSes, ses_error, set_fake_aws_env
from tests.fakes.postmark import FakePostmark, postmark_error
from tests.fakes.smtp import DROP, FakeSmtp

SENDER = "Notifications <sender@example.com>"
SENDER_ADDRESS = "sender@example.com"
RECIPIENT = "rcpt@example.org"
UNSUBSCRIBE_HEADERS = {
    "List-Unsubscribe": "<https://notify.example.com/u/tok_abc123>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def make_envelope(
    address: str = RECIPIENT,
    *,
    message_id: str = "msg-0001",
    headers: dict[str, str] | None = None,
    parts: dict[str, Any] | None = None,
) -> Envelope:
    return Envelope(
        delivery_id=1,
        run_id="run-1",
        channel="email",
        user_id="u1",
        address=address,
        template="welcome",
        template_version="v1",
        category="marketing" if headers else "transactional",
        idempotency_key=f"key-{message_id}",
        message_id=message_id,
        parts=parts or {"subject": "Hello Ada", "text": "Hi Ada, plain.", "html": "<p>Hi Ada, <b>html</b>.</p>"},
        headers=headers or {},
    )


def context(tmp_path: Path, name: str, settings: dict[str, Any]) -> ProviderContext:
    return ProviderContext(name=name, settings=settings, db_path=tmp_path / "notifyctl.db", base_dir=tmp_path)


# -- the provider boundary ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "cls", "batch_size"),
    [
        pytest.param("ses", SesProvider, 1, id="ses"),
        pytest.param("smtp", SmtpProvider, 1, id="smtp"),
        pytest.param("postmark", PostmarkProvider, 500, id="postmark"),
    ],
)
def test_registry_and_declared_capabilities(tmp_path: Path, type_name: str, cls: type[Any], batch_size: int) -> None:
    assert provider_class(type_name) is cls
    provider = cls(context(tmp_path, f"{type_name}-1", {"from_address": SENDER}))
    assert isinstance(provider, Provider)
    assert provider.name == f"{type_name}-1"
    assert cls.capabilities.idempotent is False
    assert cls.capabilities.channels == ("email",)
    assert cls.capabilities.supports_html
    assert cls.capabilities.batch_size == batch_size


@pytest.mark.parametrize(
    ("cls", "settings", "key"),
    [
        pytest.param(SesProvider, {}, "providers.p.from_address", id="ses-from"),
        pytest.param(SmtpProvider, {}, "providers.p.from_address", id="smtp-from"),
        pytest.param(SmtpProvider, {"from_address": "not an address"}, "providers.p.from_address", id="smtp-bad-from"),
        pytest.param(PostmarkProvider, {"server_token": "t"}, "providers.p.from_address", id="postmark-from"),
        pytest.param(PostmarkProvider, {"from_address": SENDER}, "providers.p.server_token", id="postmark-token"),
    ],
)
async def test_open_names_the_missing_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cls: type[Any], settings: dict[str, Any], key: str
) -> None:
    monkeypatch.delenv("POSTMARK_SERVER_TOKEN", raising=False)
    set_fake_aws_env(monkeypatch)
    provider = cls(context(tmp_path, "p", settings))
    with pytest.raises(ConfigError) as caught:
        await provider.open()
    assert caught.value.key == key
    await provider.close()


# -- SES against moto -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoSes]:
    with MotoSes() as server:
        yield server


@pytest.fixture
def moto_ses(moto_server: MotoSes, monkeypatch: pytest.MonkeyPatch) -> MotoSes:
    """moto, emptied, with SENDER_ADDRESS verified and fake AWS credentials in the environment."""
    set_fake_aws_env(monkeypatch)
    moto_server.reset()
    moto_server.verify_identity(SENDER_ADDRESS)
    return moto_server


async def opened(provider: Any) -> Any:
    await provider.open()
    return provider


@pytest.fixture
async def ses_provider(tmp_path: Path, moto_ses: MotoSes) -> AsyncIterator[SesProvider]:
    settings = {"endpoint_url": moto_ses.url, "region": moto_ses.region, "from_address": SENDER, "timeout_s": 5}
    provider = await opened(SesProvider(context(tmp_path, "ses", settings)))
    yield provider
    await provider.close()


async def test_ses_simple_send_returns_the_ses_message_id(ses_provider: SesProvider, moto_ses: MotoSes) -> None:
    result = await ses_provider.send(make_envelope())

    [sent] = moto_ses.sent_messages()
    assert result == SendResult(provider="ses", provider_message_id=sent.message_id, status_code=200)
    assert sent.kind == "simple"
    assert sent.source == SENDER
    assert sent.destinations == (RECIPIENT,)
    assert sent.subject == "Hello Ada"
    assert sent.body == "<p>Hi Ada, <b>html</b>.</p>"
    assert moto_ses.send_requests == 1


async def test_ses_sends_raw_mime_when_list_unsubscribe_headers_are_present(
    ses_provider: SesProvider, moto_ses: MotoSes
) -> None:
    result = await ses_provider.send(make_envelope(headers=UNSUBSCRIBE_HEADERS))

    [sent] = moto_ses.sent_messages()
    assert sent.kind == "raw"
    assert result.provider_message_id == sent.message_id
    assert sent.destinations == (RECIPIENT,)
    message = sent.message()
    assert message["List-Unsubscribe"] == UNSUBSCRIBE_HEADERS["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"] == "<msg-0001@example.com>"
    assert message["To"] == RECIPIENT
    assert message["Subject"] == "Hello Ada"
    assert message.get_content_type() == "multipart/alternative"
    bodies = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
    assert bodies["text/plain"].strip() == "Hi Ada, plain."
    assert bodies["text/html"].strip() == "<p>Hi Ada, <b>html</b>.</p>"
    assert moto_ses.send_requests == 1


async def test_ses_unverified_sender_is_permanent(tmp_path: Path, moto_ses: MotoSes) -> None:
    settings = {"endpoint_url": moto_ses.url, "region": moto_ses.region, "from_address": "stranger@example.net"}
    provider = await opened(SesProvider(context(tmp_path, "ses", settings)))
    try:
        with pytest.raises(PermanentError) as caught:
            await provider.send(make_envelope())
    finally:
        await provider.close()
    assert caught.value.code == "MessageRejected"
    assert moto_ses.sent_messages() == []
    assert moto_ses.send_requests == 1


# -- SES error mapping against a scripted SESv2 endpoint --------------------------------------------


@pytest.fixture
def ses_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSesApi]:
    set_fake_aws_env(monkeypatch)
    with FakeSesApi() as api:
        yield api


@pytest.mark.parametrize(
    ("answer", "expected", "code"),
    [
        pytest.param(
            ses_error(400, "TooManyRequestsException"), RateLimited, "TooManyRequestsException", id="too-many"
        ),
        pytest.param(
            ses_error(400, "TooManyRequestsException", in_header=False),
            RateLimited,
            "TooManyRequestsException",
            id="body-type",
        ),
        pytest.param(
            ses_error(429, "LimitExceededException"), RateLimited, "LimitExceededException", id="limit-exceeded"
        ),
        pytest.param(ses_error(400, "MessageRejected"), PermanentError, "MessageRejected", id="rejected"),
        pytest.param(
            ses_error(400, "AccountSuspendedException"), PermanentError, "AccountSuspendedException", id="suspended"
        ),
        pytest.param(ses_error(400, "SendingPausedException"), PermanentError, "SendingPausedException", id="paused"),
        pytest.param(
            ses_error(400, "MailFromDomainNotVerifiedException"),
            PermanentError,
            "MailFromDomainNotVerifiedException",
            id="mail-from",
        ),
        pytest.param(ses_error(404, "NotFoundException"), PermanentError, "NotFoundException", id="not-found"),
        pytest.param(ses_error(500, "InternalFailure"), TransientError, "InternalFailure", id="500"),
        pytest.param(ses_error(503, "ServiceUnavailable"), TransientError, "ServiceUnavailable", id="503"),
        # After the request was written: SES may have the message (tests/test_unknown_outcomes.py).
        pytest.param(answer_reset(), OutcomeUnknown, "reset_after_send", id="connection-reset"),
        pytest.param(answer_stall(3.0), OutcomeUnknown, "timeout_after_send", id="read-timeout"),
    ],
)
async def test_ses_errors_map_with_exactly_one_request(
    tmp_path: Path, ses_api: FakeSesApi, answer: Answer, expected: type[ProviderError], code: str | None
) -> None:
    settings = {"endpoint_url": ses_api.url, "region": "eu-west-1", "from_address": SENDER, "timeout_s": 0.5}
    provider = await opened(SesProvider(context(tmp_path, "ses", settings)))
    ses_api.script(answer)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.send(make_envelope())
        # The next send goes through: the client survived the error.
        result = await provider.send(make_envelope(message_id="msg-0002"))
    finally:
        await provider.close()

    assert type(caught.value) is expected
    if code is not None:
        assert caught.value.code == code
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after_s is None  # SES sends no Retry-After
    assert result.provider_message_id == "fake-ses-1"
    # botocore's standard mode would retry throttling, 5xx, resets and timeouts; ours is off.
    assert len(ses_api.requests_to(SEND_EMAIL_PATH)) == 2


async def test_ses_request_carries_tags_and_configuration_set(tmp_path: Path, ses_api: FakeSesApi) -> None:
    settings = {
        "endpoint_url": ses_api.url,
        "from_address": SENDER,
        "configuration_set": "marketing",
        "tags": {"campaign": "spring"},
    }
    provider = await opened(SesProvider(context(tmp_path, "ses", settings)))
    try:
        await provider.send(make_envelope())
    finally:
        await provider.close()

    [request] = ses_api.requests_to(SEND_EMAIL_PATH)
    body = request.json()
    assert body["ConfigurationSetName"] == "marketing"
    assert body["EmailTags"] == [{"Name": "campaign", "Value": "spring"}]
    assert body["Destination"] == {"ToAddresses": [RECIPIENT]}
    assert body["Content"]["Simple"]["Body"]["Text"]["Data"] == "Hi Ada, plain."
    assert "us-east-1" in request.headers["Authorization"]  # the region from the (fake) AWS chain


async def test_ses_unreachable_endpoint_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_fake_aws_env(monkeypatch)
    with FakeSesApi() as api:
        closed_url = api.url  # nothing listens here once the fake has stopped
    provider = await opened(SesProvider(context(tmp_path, "ses", {"endpoint_url": closed_url, "from_address": SENDER})))
    try:
        with pytest.raises(TransientError) as caught:
            await provider.send(make_envelope())
    finally:
        await provider.close()
    assert type(caught.value) is TransientError


# -- SMTP against aiosmtpd ------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[FakeSmtp]:
    with FakeSmtp() as server:
        yield server


def smtp_settings(server: FakeSmtp, **overrides: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "from_address": SENDER,
        "start_tls": False,
        "local_hostname": "client.example.com",
        "timeout_s": 5,
        **overrides,
    }


@pytest.fixture
async def smtp_provider(tmp_path: Path, smtp_server: FakeSmtp) -> AsyncIterator[SmtpProvider]:
    provider = await opened(SmtpProvider(context(tmp_path, "smtp", smtp_settings(smtp_server))))
    yield provider
    await provider.close()


async def test_smtp_delivers_both_parts_and_returns_the_message_id(
    smtp_provider: SmtpProvider, smtp_server: FakeSmtp
) -> None:
    result = await smtp_provider.send(make_envelope(headers=UNSUBSCRIBE_HEADERS))

    assert result == SendResult(provider="smtp", provider_message_id="msg-0001@example.com")
    [mail] = smtp_server.messages
    assert mail.mail_from == SENDER_ADDRESS
    assert mail.rcpt_tos == (RECIPIENT,)
    message = mail.message()
    assert message["Message-ID"] == "<msg-0001@example.com>"
    assert message["List-Unsubscribe"] == UNSUBSCRIBE_HEADERS["List-Unsubscribe"]
    bodies = {part.get_content_type(): part.get_content().strip() for part in message.iter_parts()}
    assert bodies == {"text/plain": "Hi Ada, plain.", "text/html": "<p>Hi Ada, <b>html</b>.</p>"}
    assert smtp_server.transactions == 1


def refuse_recipient(server: FakeSmtp) -> None:
    server.refuse(RECIPIENT)


@pytest.mark.parametrize(
    ("arrange", "expected", "code", "suppress", "connections"),
    [
        pytest.param(refuse_recipient, PermanentError, "550", True, 1, id="550-user-unknown"),
        pytest.param(
            lambda s: s.script_rcpt("553 5.7.1 Relaying denied"), PermanentError, "553", False, 1, id="553-policy"
        ),
        pytest.param(lambda s: s.script_rcpt("451 4.3.0 Try again later"), TransientError, "451", False, 1, id="451"),
        pytest.param(lambda s: s.script_rcpt("452 4.2.2 Mailbox full"), TransientError, "452", False, 1, id="452"),
        pytest.param(
            lambda s: s.script_data("554 5.6.0 Content rejected"), PermanentError, "554", False, 1, id="554-data"
        ),
        pytest.param(lambda s: s.script_data("421 4.3.2 Shutting down"), TransientError, "421", False, 2, id="421"),
        pytest.param(lambda s: s.script_data(DROP), OutcomeUnknown, "reset_after_send", False, 2, id="dropped-in-data"),
        pytest.param(lambda s: s.script_rcpt(DROP), TransientError, "connection", False, 2, id="dropped-in-rcpt"),
    ],
)
async def test_smtp_errors_map_and_the_next_send_succeeds(
    smtp_provider: SmtpProvider,
    smtp_server: FakeSmtp,
    arrange: Callable[[FakeSmtp], None],
    expected: type[ProviderError],
    code: str,
    suppress: bool,
    connections: int,
) -> None:
    arrange(smtp_server)
    with pytest.raises(ProviderError) as caught:
        await smtp_provider.send(make_envelope())
    await smtp_provider.send(make_envelope("other@example.org", message_id="msg-0002"))

    assert type(caught.value) is expected
    assert caught.value.code == code
    assert getattr(caught.value, "suppress", False) is suppress
    assert [mail.rcpt_tos for mail in smtp_server.messages] == [("other@example.org",)]
    assert smtp_server.transactions == 2  # one MAIL FROM per send: nothing was retried
    # A refusal leaves the connection usable; a closed one is replaced.
    assert smtp_server.connections == connections


async def test_smtp_server_restart_is_transient_then_the_pool_reconnects(
    smtp_provider: SmtpProvider, smtp_server: FakeSmtp
) -> None:
    await smtp_provider.send(make_envelope(message_id="msg-0001"))
    smtp_server.stop()

    with pytest.raises(TransientError) as caught:
        await smtp_provider.send(make_envelope(message_id="msg-0002"))
    assert caught.value.code == "connection"

    smtp_server.start()
    await smtp_provider.send(make_envelope(message_id="msg-0003"))
    ids = [mail.message()["Message-ID"] for mail in smtp_server.messages]
    assert ids == ["<msg-0001@example.com>", "<msg-0003@example.com>"]
    assert smtp_server.connections == 2


async def test_smtp_connection_closed_while_idle_is_replaced_without_an_error(
    smtp_provider: SmtpProvider, smtp_server: FakeSmtp
) -> None:
    await smtp_provider.send(make_envelope(message_id="msg-0001"))
    smtp_server.drop_connections()
    await asyncio.sleep(0.1)  # let the client's loop see the FIN

    await smtp_provider.send(make_envelope(message_id="msg-0002"))
    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2


async def test_smtp_pool_reuses_connections(tmp_path: Path, smtp_server: FakeSmtp) -> None:
    provider = await opened(SmtpProvider(context(tmp_path, "smtp", smtp_settings(smtp_server, pool_size=2))))
    try:
        for number in range(5):
            await provider.send(make_envelope(message_id=f"seq-{number}"))
        assert smtp_server.connections == 1

        await asyncio.gather(*(provider.send(make_envelope(message_id=f"par-{n}")) for n in range(10)))
    finally:
        await provider.close()
    assert len(smtp_server.messages) == 15
    assert smtp_server.transactions == 15
    assert smtp_server.connections == 2  # never more than pool_size


async def test_smtp_header_injection_is_refused_before_connecting(
    smtp_provider: SmtpProvider, smtp_server: FakeSmtp
) -> None:
    with pytest.raises(PermanentError) as caught:
        await smtp_provider.send(make_envelope(headers={"X-Note": "a\r\nBcc: victim@example.net"}))
    assert caught.value.code == "bad_header"
    assert smtp_server.connections == 0


# -- Postmark against its fake API ----------------------------------------------------------------


@pytest.fixture
def postmark_api() -> Iterator[FakePostmark]:
    with FakePostmark() as api:
        yield api


def postmark_settings(api: FakePostmark, **overrides: Any) -> dict[str, Any]:
    return {"base_url": api.url, "server_token": api.token, "from_address": SENDER, "timeout_s": 5, **overrides}


@pytest.fixture
async def postmark_provider(tmp_path: Path, postmark_api: FakePostmark) -> AsyncIterator[PostmarkProvider]:
    provider = await opened(PostmarkProvider(context(tmp_path, "postmark", postmark_settings(postmark_api))))
    yield provider
    await provider.close()


async def test_postmark_send_posts_the_message_and_returns_its_id(
    postmark_provider: PostmarkProvider, postmark_api: FakePostmark
) -> None:
    result = await postmark_provider.send(make_envelope(headers=UNSUBSCRIBE_HEADERS))

    [sent] = postmark_api.sent
    assert result == SendResult(provider="postmark", provider_message_id=sent["MessageID"], status_code=200)
    [request] = postmark_api.requests_to("/email")
    assert request.headers["X-Postmark-Server-Token"] == postmark_api.token
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "From": SENDER,
        "To": RECIPIENT,
        "Subject": "Hello Ada",
        "TextBody": "Hi Ada, plain.",
        "HtmlBody": "<p>Hi Ada, <b>html</b>.</p>",
        "MessageStream": "outbound",
        "Headers": [{"Name": name, "Value": value} for name, value in UNSUBSCRIBE_HEADERS.items()],
    }


async def test_postmark_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postmark_api: FakePostmark
) -> None:
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", postmark_api.token)
    settings = {"base_url": postmark_api.url, "from_address": SENDER, "message_stream": "broadcast"}
    provider = await opened(PostmarkProvider(context(tmp_path, "postmark", settings)))
    try:
        await provider.send(make_envelope())
    finally:
        await provider.close()
    assert postmark_api.sent[0]["MessageStream"] == "broadcast"


@pytest.mark.parametrize(
    ("arrange", "expected", "code", "suppress", "retry_after_s"),
    [
        pytest.param(
            lambda api: api.script(postmark_error(429, 429, "Rate limit exceeded", {"Retry-After": "3"})),
            RateLimited,
            "429",
            False,
            3.0,
            id="429",
        ),
        pytest.param(lambda api: api.script(answer_json(429, {})), RateLimited, "429", False, None, id="429-no-header"),
        pytest.param(
            lambda api: api.script(postmark_error(500, 0, "oops")), TransientError, "500", False, None, id="500"
        ),
        pytest.param(lambda api: api.script(answer_json(503, {})), TransientError, "503", False, None, id="503"),
        pytest.param(lambda api: api.make_inactive(RECIPIENT), PermanentError, "406", True, None, id="422-inactive"),
        pytest.param(
            lambda api: api.script(postmark_error(422, 300, "Invalid email request")),
            PermanentError,
            "300",
            False,
            None,
            id="422-invalid",
        ),
        pytest.param(
            lambda api: setattr(api, "token", "another-token"), PermanentError, "10", False, None, id="401-wrong-token"
        ),
        pytest.param(lambda api: api.script(answer_json(404, {})), PermanentError, "404", False, None, id="404"),
        pytest.param(
            lambda api: api.script(answer_reset()), OutcomeUnknown, "reset_after_send", False, None, id="reset"
        ),
        pytest.param(
            lambda api: api.script(answer_stall(3.0)), OutcomeUnknown, "timeout_after_send", False, None, id="timeout"
        ),
    ],
)
async def test_postmark_errors_map_with_exactly_one_request(
    tmp_path: Path,
    postmark_api: FakePostmark,
    arrange: Callable[[FakePostmark], None],
    expected: type[ProviderError],
    code: str,
    suppress: bool,
    retry_after_s: float | None,
) -> None:
    provider = await opened(PostmarkProvider(context(tmp_path, "pm", postmark_settings(postmark_api, timeout_s=0.5))))
    arrange(postmark_api)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.send(make_envelope())
    finally:
        await provider.close()

    assert type(caught.value) is expected
    assert caught.value.code == code
    assert getattr(caught.value, "suppress", False) is suppress
    assert getattr(caught.value, "retry_after_s", None) == retry_after_s
    assert len(postmark_api.requests) == 1
    assert postmark_api.sent == []


async def test_postmark_batch_reports_each_message_in_order(
    postmark_provider: PostmarkProvider, postmark_api: FakePostmark
) -> None:
    postmark_api.make_inactive("gone@example.org")
    envelopes = [
        make_envelope("a@example.org", message_id="b-1"),
        make_envelope("gone@example.org", message_id="b-2"),
        make_envelope("c@example.org", message_id="b-3", headers={"X-Evil": "x\r\nBcc: victim@example.net"}),
        make_envelope("d@example.org", message_id="b-4"),
    ]

    outcomes = await postmark_provider.send_batch(envelopes)

    assert len(outcomes) == 4
    first, gone, evil, last = outcomes
    assert isinstance(first, SendResult) and isinstance(last, SendResult)
    assert [first.provider_message_id, last.provider_message_id] == [m["MessageID"] for m in postmark_api.sent]
    assert isinstance(gone, PermanentError) and gone.code == "406" and gone.suppress
    assert isinstance(evil, PermanentError) and evil.code == "bad_header"
    [request] = postmark_api.requests
    assert request.path == "/email/batch"
    assert [message["To"] for message in request.json()] == ["a@example.org", "gone@example.org", "d@example.org"]


async def test_postmark_batch_request_errors_raise(
    postmark_provider: PostmarkProvider, postmark_api: FakePostmark
) -> None:
    postmark_api.script(postmark_error(429, 429, "Rate limit exceeded", {"Retry-After": "5"}))
    with pytest.raises(RateLimited) as caught:
        await postmark_provider.send_batch([make_envelope(message_id=f"b-{n}") for n in range(3)])
    assert caught.value.retry_after_s == 5.0
    assert len(postmark_api.requests) == 1
    assert await postmark_provider.send_batch([]) == []
    with pytest.raises(ValueError):
        await postmark_provider.send_batch([make_envelope()] * 501)
    assert len(postmark_api.requests) == 1
