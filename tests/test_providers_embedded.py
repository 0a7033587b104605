"""The embedded providers: outbox (.eml files), in-app (SQLite inbox), webhook (against a real receiver)."""

from __future__ import annotations

import email.policy
import errno
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from notifyctl.errors import ConfigError, OutcomeUnknown, PermanentError, RateLimited, TransientError
from notifyctl.models import Envelope
from notifyctl.providers.base import Provider, ProviderContext, build_provider
from notifyctl.providers.email import outbox as outbox_module
from notifyctl.providers.email.outbox import OutboxProvider
from notifyctl.providers.inapp import InAppProvider
from notifyctl.providers.webhook import WebhookProvider, parse_retry_after
from notifyctl.security.signing import webhook_id
from notifyctl.store.db import connect
from tests.webhook_sink import SINK_SECRET, WebhookSink, accept_then_stall, reset, respond, stall

UNSUBSCRIBE_URL = "https://example.com/unsubscribe/" + "t" * 120
OTHER_SECRET = "whsec_QW5vdGhlciBzZWNyZXQga2V5IGZvciByb3RhdGlvbg=="


def make_envelope(channel: str, address: str, parts: dict[str, Any], **fields: Any) -> Envelope:
    values: dict[str, Any] = {
        "delivery_id": 1,
        "run_id": "run_1",
        "channel": channel,
        "user_id": "user-1",
        "address": address,
        "template": "welcome",
        "template_version": "v1",
        "category": "marketing",
        "idempotency_key": "user-1:welcome:evt-1",
        "message_id": webhook_id("user-1:welcome:evt-1"),
        "parts": parts,
    }
    values.update(fields)
    return Envelope(**values)


def email_envelope(**fields: Any) -> Envelope:
    parts = {"subject": "Wëlcome, Ada", "text": "Hello Ada,\nwelcome aboard.\n", "html": "<p>Hello <b>Ada</b></p>\n"}
    headers = {"List-Unsubscribe": f"<{UNSUBSCRIBE_URL}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    return make_envelope(
        "email", "Ada Lovelace <ada@example.org>", fields.pop("parts", parts), headers=headers, **fields
    )


def context(tmp_path: Path, name: str, **settings: Any) -> ProviderContext:
    return ProviderContext(name=name, settings=settings, db_path=tmp_path / "notifyctl.db", base_dir=tmp_path)


def parse_eml(path: Path) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize(
    ("type_name", "cls"),
    [
        pytest.param("outbox", OutboxProvider, id="outbox"),
        pytest.param("inapp", InAppProvider, id="inapp"),
        pytest.param("webhook", WebhookProvider, id="webhook"),
    ],
)
def test_registry_builds_each_provider(tmp_path: Path, type_name: str, cls: type) -> None:
    provider = build_provider(type_name, context(tmp_path, f"my-{type_name}"))
    assert isinstance(provider, cls)
    assert isinstance(provider, Provider)
    assert provider.name == f"my-{type_name}"
    # resume reads it from the class (operations._resend_channels) to decide in-doubt re-sends
    assert cls.capabilities.idempotent is True


# -- outbox ----------------------------------------------------------------------------------------


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[OutboxProvider]:
    provider = OutboxProvider(context(tmp_path, "outbox", path="mail", from_address="Acme <news@acme.test>"))
    await provider.open()
    yield provider
    await provider.close()


async def test_outbox_writes_a_parseable_message(outbox: OutboxProvider) -> None:
    envelope = email_envelope()
    result = await outbox.send(envelope)

    assert result.provider == "outbox"
    assert result.provider_message_id == f"{envelope.message_id}.eml"
    message = parse_eml(outbox.folder / result.provider_message_id)
    assert message["Subject"] == "Wëlcome, Ada"
    assert message["From"].addresses[0].addr_spec == "news@acme.test"
    assert message["To"].addresses[0].addr_spec == "ada@example.org"
    assert message["To"].addresses[0].display_name == "Ada Lovelace"
    assert message["Message-ID"] == f"<{envelope.message_id}@acme.test>"
    assert abs(message["Date"].datetime - datetime.now(UTC)) < timedelta(minutes=1)
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE_URL}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    # On the wire every line ends in CRLF (RFC 5322); compare the text itself.
    assert text_part.get_content().replace("\r\n", "\n") == "Hello Ada,\nwelcome aboard.\n"
    assert html_part.get_content().replace("\r\n", "\n") == "<p>Hello <b>Ada</b></p>\n"


async def test_outbox_list_unsubscribe_stays_on_one_raw_line(outbox: OutboxProvider) -> None:
    result = await outbox.send(email_envelope())
    raw = (outbox.folder / str(result.provider_message_id)).read_bytes()
    # Mailbox providers read the URL as is; RFC 2047 encoding or folding inside it would break it.
    assert f"List-Unsubscribe: <{UNSUBSCRIBE_URL}>\r\n".encode() in raw


async def test_outbox_text_only_message_is_not_multipart(outbox: OutboxProvider) -> None:
    result = await outbox.send(email_envelope(parts={"subject": "Hi", "text": "plain only\n"}))
    message = parse_eml(outbox.folder / str(result.provider_message_id))
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == "plain only\n"


async def test_outbox_file_modes_and_no_leftovers(outbox: OutboxProvider) -> None:
    first = await outbox.send(email_envelope())
    second = await outbox.send(email_envelope())  # a retry of the same delivery

    assert first.provider_message_id == second.provider_message_id
    assert [p.name for p in outbox.folder.iterdir()] == [first.provider_message_id]
    assert stat.S_IMODE(outbox.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((outbox.folder / str(first.provider_message_id)).stat().st_mode) == 0o600


async def test_outbox_message_id_is_stable_across_retries(outbox: OutboxProvider) -> None:
    envelope = email_envelope()
    ids = set()
    for _ in range(2):
        result = await outbox.send(envelope)
        ids.add(parse_eml(outbox.folder / str(result.provider_message_id))["Message-ID"])
    assert ids == {f"<{envelope.message_id}@acme.test>"}


async def test_outbox_failed_write_leaves_no_partial_file(outbox: OutboxProvider) -> None:
    envelope = email_envelope()
    # A directory where the file should go makes the final rename fail after the data is written.
    (outbox.folder / f"{envelope.message_id}.eml").mkdir()
    with pytest.raises(PermanentError) as caught:
        await outbox.send(envelope)
    assert caught.value.code == "io"
    assert [p.name for p in outbox.folder.iterdir()] == [f"{envelope.message_id}.eml"]


@pytest.mark.parametrize(
    ("os_errno", "expected"),
    [
        pytest.param(errno.ENOSPC, TransientError, id="disk-full"),
        pytest.param(errno.EIO, TransientError, id="io-error"),
        pytest.param(errno.EACCES, PermanentError, id="permission"),
        pytest.param(errno.ENOENT, PermanentError, id="missing-folder"),
    ],
)
def test_outbox_os_error_mapping(os_errno: int, expected: type[Exception]) -> None:
    with pytest.raises(expected) as caught, outbox_module._mapped_errors():
        raise OSError(os_errno, "simulated")
    assert type(caught.value) is expected


async def test_outbox_real_enospc_is_transient(tmp_path: Path) -> None:
    # /dev/full fails every write with ENOSPC, like a full disk.
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(TransientError), outbox_module._mapped_errors(), open("/dev/full", "wb") as full:
        full.write(b"x" * 10)
        full.flush()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"headers": {"X-Campaign": "spring\r\nBcc: victim@example.com"}}, id="crlf-in-extra-header"),
        pytest.param({"headers": {"X-Campaign": "spring\nBcc: victim@example.com"}}, id="lf-in-extra-header"),
        pytest.param({"headers": {"Bcc": "victim@example.com"}}, id="reserved-bcc"),
        pytest.param({"headers": {"X-Bad Name": "v"}}, id="space-in-header-name"),
        pytest.param({"headers": {"X-Bad:Name": "v"}}, id="colon-in-header-name"),
        pytest.param({"parts": {"subject": "Hi\r\nBcc: victim@example.com", "text": "x"}}, id="crlf-in-subject"),
        pytest.param({"address": "ada@example.org\r\nBcc: victim@example.com"}, id="crlf-in-address"),
        pytest.param({"address": "ada@example.org, eve@example.org"}, id="two-addresses"),
        pytest.param({"address": "not an address"}, id="no-address"),
        pytest.param({"message_id": "msg_a\r\nX: y"}, id="crlf-in-message-id"),
    ],
)
async def test_outbox_refuses_header_injection(outbox: OutboxProvider, fields: dict[str, Any]) -> None:
    envelope = email_envelope()
    envelope = envelope.model_copy(update=fields)
    with pytest.raises(PermanentError):
        await outbox.send(envelope)
    assert list(outbox.folder.iterdir()) == []


async def test_outbox_refuses_an_empty_email(outbox: OutboxProvider) -> None:
    with pytest.raises(PermanentError) as caught:
        await outbox.send(email_envelope(parts={"subject": "nothing"}))
    assert caught.value.code == "empty_body"


def test_outbox_bad_from_address_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="from_address"):
        OutboxProvider(context(tmp_path, "outbox", from_address="nobody"))


async def test_outbox_default_settings(tmp_path: Path) -> None:
    provider = OutboxProvider(context(tmp_path, "outbox"))
    await provider.open()
    result = await provider.send(email_envelope())
    message = parse_eml(tmp_path / "outbox" / str(result.provider_message_id))
    assert message["From"].addresses[0].addr_spec == "notifications@example.com"


# -- in-app ----------------------------------------------------------------------------------------


@pytest.fixture
async def inapp(tmp_path: Path) -> AsyncIterator[InAppProvider]:
    provider = InAppProvider(context(tmp_path, "inapp", busy_timeout_ms=100))
    await provider.open()
    yield provider
    await provider.close()


def inapp_envelope(delivery_id: int = 1, **parts: Any) -> Envelope:
    values = {"title": "Your report is ready", "body": "Open it from the dashboard.", "data": {"report": 7}}
    values.update(parts)
    return make_envelope("inapp", "user-1", values, delivery_id=delivery_id)


async def test_inapp_writes_one_row_per_delivery(inapp: InAppProvider, tmp_path: Path) -> None:
    first = await inapp.send(inapp_envelope(delivery_id=41))
    again = await inapp.send(inapp_envelope(delivery_id=41))
    other = await inapp.send(inapp_envelope(delivery_id=42, data=None))

    assert first.provider == "inapp"
    assert first.provider_message_id == again.provider_message_id != other.provider_message_id
    conn = connect(tmp_path / "notifyctl.db")
    rows = conn.execute("SELECT id, user_id, delivery_id, title, body, data, read_at FROM inbox ORDER BY id").fetchall()
    conn.close()
    assert [dict(row) for row in rows] == [
        {
            "id": int(str(first.provider_message_id)),
            "user_id": "user-1",
            "delivery_id": 41,
            "title": "Your report is ready",
            "body": "Open it from the dashboard.",
            "data": '{"report":7}',
            "read_at": None,
        },
        {
            "id": int(str(other.provider_message_id)),
            "user_id": "user-1",
            "delivery_id": 42,
            "title": "Your report is ready",
            "body": "Open it from the dashboard.",
            "data": "{}",
            "read_at": None,
        },
    ]


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        pytest.param({"title": None}, "missing_part", id="no-title"),
        pytest.param({"body": 12}, "missing_part", id="body-not-text"),
        pytest.param({"data": ["not", "an", "object"]}, "bad_part", id="data-not-object"),
    ],
)
async def test_inapp_refuses_bad_parts(inapp: InAppProvider, parts: dict[str, Any], code: str) -> None:
    with pytest.raises(PermanentError) as caught:
        await inapp.send(inapp_envelope(**parts))
    assert caught.value.code == code


async def test_inapp_locked_database_is_transient(inapp: InAppProvider, tmp_path: Path) -> None:
    holder = sqlite3.connect(str(tmp_path / "notifyctl.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(TransientError):
            await inapp.send(inapp_envelope(delivery_id=7))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    result = await inapp.send(inapp_envelope(delivery_id=7))
    assert result.provider_message_id is not None


# -- webhook ---------------------------------------------------------------------------------------

BODY = {"event": "invoice.paid", "invoice": {"id": "in_42", "amount": 4200}, "note": "ünïcode"}


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[WebhookProvider]:
    provider = WebhookProvider(context(tmp_path, "hooks", allow_hosts=["127.0.0.1", "localhost"], timeout_s=0.5))
    await provider.open()
    yield provider
    await provider.close()


def webhook_envelope(url: str, secrets: list[str] | None = None, **fields: Any) -> Envelope:
    envelope = make_envelope("webhook", url, {"body": BODY}, **fields)
    envelope.signing_secrets = [SINK_SECRET] if secrets is None else secrets
    return envelope


async def test_webhook_delivers_a_verified_request(webhook: WebhookProvider, webhook_sink: WebhookSink) -> None:
    envelope = webhook_envelope(webhook_sink.url("/hook"))
    before = int(time.time())
    result = await webhook.send(envelope)

    assert result.provider == "hooks"
    assert result.provider_message_id == envelope.message_id
    assert result.status_code == 200
    [received] = webhook_sink.requests
    assert received.verified
    assert received.method == "POST"
    assert received.webhook_id == envelope.message_id
    assert received.body == orjson.dumps(BODY)
    assert received.headers["Content-Type"] == "application/json"
    assert before <= int(received.headers["webhook-timestamp"]) <= int(time.time())


async def test_webhook_retry_keeps_the_id_and_reuses_the_connection(
    webhook: WebhookProvider, webhook_sink: WebhookSink
) -> None:
    envelope = webhook_envelope(webhook_sink.url("/hook"))
    await webhook.send(envelope)
    await webhook.send(envelope)
    first, second = webhook_sink.requests
    assert first.webhook_id == second.webhook_id == envelope.message_id
    assert first.verified and second.verified
    assert first.peer_port == second.peer_port  # keep-alive


async def test_webhook_signs_with_every_secret_during_rotation(
    webhook: WebhookProvider, webhook_sink: WebhookSink
) -> None:
    webhook_sink.secrets = [SINK_SECRET, OTHER_SECRET]
    await webhook.send(webhook_envelope(webhook_sink.url("/hook"), secrets=[SINK_SECRET, OTHER_SECRET]))
    [received] = webhook_sink.requests
    assert received.verified_by == (0, 1)
    assert len(received.headers["webhook-signature"].split(" ")) == 2


@pytest.mark.parametrize(
    ("answer", "expected", "code", "retry_after_s"),
    [
        pytest.param(respond(500), TransientError, "500", None, id="500"),
        pytest.param(respond(503, {"Retry-After": "30"}), TransientError, "503", 30, id="503-retry-after"),
        pytest.param(respond(429, {"Retry-After": "7"}), RateLimited, "429", 7, id="429-retry-after"),
        pytest.param(respond(429), RateLimited, "429", None, id="429-bare"),
        pytest.param(respond(429, {"Retry-After": "86400"}), RateLimited, "429", 3600, id="429-capped"),
        pytest.param(respond(408, {"Retry-After": "2"}), TransientError, "408", 2, id="408"),
        pytest.param(respond(400), PermanentError, "400", None, id="400"),
        pytest.param(respond(404), PermanentError, "404", None, id="404"),
        pytest.param(respond(410), PermanentError, "410", None, id="410"),
        # After the request was written: the endpoint may have processed it.
        pytest.param(reset(), OutcomeUnknown, "reset_after_send", None, id="connection-reset"),
        pytest.param(stall(5), OutcomeUnknown, "timeout_after_send", None, id="no-answer-before-timeout"),
    ],
)
async def test_webhook_error_mapping(
    webhook: WebhookProvider,
    webhook_sink: WebhookSink,
    answer: Any,
    expected: type[Exception],
    code: str,
    retry_after_s: float | None,
) -> None:
    webhook_sink.script(answer)
    with pytest.raises(expected) as caught:
        await webhook.send(webhook_envelope(webhook_sink.url("/hook")))
    error = caught.value
    assert type(error) is expected
    assert getattr(error, "code", None) == code
    assert getattr(error, "retry_after_s", None) == retry_after_s
    assert getattr(error, "disable_endpoint", False) is (code == "410")
    assert len(webhook_sink.requests) == 1


async def test_webhook_retry_after_http_date(webhook: WebhookProvider, webhook_sink: WebhookSink) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    webhook_sink.script(respond(429, {"Retry-After": when}))
    with pytest.raises(RateLimited) as caught:
        await webhook.send(webhook_envelope(webhook_sink.url("/hook")))
    assert caught.value.retry_after_s is not None
    assert 110 <= caught.value.retry_after_s <= 120


async def test_webhook_never_follows_redirects(webhook: WebhookProvider, webhook_sink: WebhookSink) -> None:
    webhook_sink.on_path("/moved", respond(302, {"Location": webhook_sink.url("/target")}))
    with pytest.raises(PermanentError, match="redirects are not followed"):
        await webhook.send(webhook_envelope(webhook_sink.url("/moved")))
    assert [r.path for r in webhook_sink.requests] == ["/moved"]
    assert webhook_sink.requests_to("/target") == []


async def test_webhook_accepted_then_stalled_body_is_a_success(
    webhook: WebhookProvider, webhook_sink: WebhookSink
) -> None:
    # The status line says the endpoint took the delivery; a slow response body must not undo that.
    webhook_sink.script(accept_then_stall(5))
    started = time.monotonic()
    result = await webhook.send(webhook_envelope(webhook_sink.url("/hook")))
    assert result.status_code == 200
    assert time.monotonic() - started < 0.5


async def test_webhook_connection_refused_is_transient(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    provider = WebhookProvider(context(tmp_path, "hooks", allow_hosts=["127.0.0.1"]))
    await provider.open()
    url = webhook_sink.url("/hook")
    webhook_sink.stop()  # nothing listens on that port any more
    try:
        with pytest.raises(TransientError) as caught:
            await provider.send(webhook_envelope(url))
        assert caught.value.code == "connection"
    finally:
        await provider.close()


@pytest.fixture
async def strict_webhook(tmp_path: Path) -> AsyncIterator[WebhookProvider]:
    provider = WebhookProvider(context(tmp_path, "hooks", timeout_s=0.5))
    await provider.open()
    yield provider
    await provider.close()


@pytest.mark.parametrize(
    ("url_template", "code"),
    [
        pytest.param("http://127.0.0.1:{port}/hook", "bad_url", id="http-not-allowlisted"),
        pytest.param("http://localhost:{port}/hook", "bad_url", id="http-localhost-not-allowlisted"),
        pytest.param("https://127.0.0.1:{port}/hook", "ssrf", id="https-loopback-literal"),
        pytest.param("https://localhost:{port}/hook", "ssrf", id="https-name-resolving-to-loopback"),
        pytest.param("https://2130706433:{port}/hook", "ssrf", id="decimal-loopback"),
        pytest.param("https://0x7f000001:{port}/hook", "ssrf", id="hex-loopback"),
        pytest.param("https://127.1:{port}/hook", "ssrf", id="short-loopback"),
        pytest.param("https://[::ffff:127.0.0.1]:{port}/hook", "ssrf", id="mapped-loopback"),
        pytest.param("https://169.254.169.254/latest/meta-data/", "ssrf", id="cloud-metadata"),
        pytest.param("https://[fd00:ec2::254]/latest/meta-data/", "ssrf", id="cloud-metadata-v6"),
        pytest.param("ftp://example.com/hook", "bad_url", id="not-http"),
        pytest.param("/relative/path", "bad_url", id="relative"),
        pytest.param("https://", "bad_url", id="no-host"),
    ],
)
async def test_webhook_refuses_unsafe_urls(
    strict_webhook: WebhookProvider, webhook_sink: WebhookSink, url_template: str, code: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await strict_webhook.send(webhook_envelope(url_template.format(port=webhook_sink.port)))
    assert caught.value.code == code
    assert webhook_sink.requests == []


@pytest.mark.parametrize(
    ("fields", "secrets", "code"),
    [
        pytest.param({"message_id": "msg_with.dot"}, None, "bad_message_id", id="dot-in-id"),
        pytest.param({"message_id": ""}, None, "bad_message_id", id="empty-id"),
        pytest.param({"message_id": "msg_a b"}, None, "bad_message_id", id="space-in-id"),
        pytest.param({"message_id": "msg_a\r\nX: y"}, None, "bad_message_id", id="crlf-in-id"),
        pytest.param({"message_id": "msg_a\x01"}, None, "bad_message_id", id="control-in-id"),
        pytest.param({"message_id": "msg_\u00e9"}, None, "bad_message_id", id="non-ascii-id"),
        pytest.param({}, [], "no_secret", id="no-secret"),
        pytest.param({}, ["whsec_***"], "bad_secret", id="bad-secret"),
        pytest.param({"parts": {"text": "no body part"}}, None, "missing_part", id="no-body"),
        pytest.param({"parts": {"body": {"when": object()}}}, None, "bad_part", id="body-not-json"),
    ],
)
async def test_webhook_refuses_bad_envelopes(
    webhook: WebhookProvider,
    webhook_sink: WebhookSink,
    fields: dict[str, Any],
    secrets: list[str] | None,
    code: str,
) -> None:
    envelope = webhook_envelope(webhook_sink.url("/hook"), secrets).model_copy(update=fields)
    with pytest.raises(PermanentError) as caught:
        await webhook.send(envelope)
    assert caught.value.code == code
    assert webhook_sink.requests == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("7", 7.0, id="seconds"),
        pytest.param(" 12 ", 12.0, id="padded"),
        pytest.param("-5", 0.0, id="negative"),
        pytest.param("999999", 3600.0, id="capped"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 60.0, id="http-date"),
        pytest.param("Wed, 21 Oct 2015 07:26:00 GMT", 0.0, id="http-date-past"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("nan", None, id="nan"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 27, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected
