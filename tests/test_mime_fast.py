"""notifyctl.providers.email.mime's direct writer against the standard library builder it replaces on the hot path.

`render_email` / `build_message_bytes` must produce the message of `build_message(...).as_bytes()`:
the same headers and parts once parsed, 7-bit, CRLF, lines ≤ 998, and the same refusals.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notifyctl.errors import PermanentError
from notifyctl.models import Envelope
from notifyctl.providers.base import ProviderContext
from notifyctl.providers.email import mime
from notifyctl.providers.email.mime import build_message, build_message_bytes, render_email
from notifyctl.providers.email.outbox import OutboxProvider
from notifyctl.providers.email.smtp import SmtpProvider
from tests.fakes.smtp import FakeSmtp

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
FROM = "Acme <news@acme.test>"
DOMAIN = "acme.test"
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://notify.example.com/u/" + "t" * 120 + ">",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def envelope(
    *,
    subject: Any = "Hello Ada",
    text: Any = "Hi Ada,\nwelcome.\n",
    html: Any = "<p>Hi <b>Ada</b></p>\n",
    address: str = "ada@example.org",
    message_id: str = "msg_0001",
    headers: dict[str, str] | None = None,
) -> Envelope:
    parts = {"subject": subject, "text": text, "html": html}
    return Envelope(
        delivery_id=1,
        run_id="run_1",
        channel="email",
        user_id="u1",
        address=address,
        template="welcome",
        template_version="v1",
        category="marketing",
        idempotency_key="k1",
        message_id=message_id,
        parts={name: value for name, value in parts.items() if value is not None},
        headers=UNSUBSCRIBE if headers is None else headers,
    )


def outcome(build: Any) -> tuple[bytes | None, tuple[str, str | None] | None]:
    try:
        return build(), None
    except PermanentError as exc:
        return None, ("PermanentError", exc.code)
    except Exception as exc:  # the old builder lets a few standard library errors through
        return None, (type(exc).__name__, None)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def blank_header_lines(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    return sum(not line.strip(b" \t") for line in head)


def assert_wire_safe(data: bytes) -> None:
    assert data.isascii(), "not 7-bit"
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines), "bare CR or LF"
    assert max(map(len, lines)) <= 998


def header_items(message: EmailMessage, *, part: bool = False) -> list[tuple[str, str]]:
    items = []
    for name, value in message.items():
        if name.lower() == "content-type":
            value = re.sub(r';\s*boundary="[^"]*"', "", str(value))
        if part and name.lower() == "mime-version":
            continue  # the standard library repeats it in the html part of an alternative
        if name.lower() == "content-transfer-encoding":
            continue  # compared on its own: quoted-printable and base64 may differ at the margin
        items.append((name, str(value)))
    return items


def defects(header: Any) -> list[tuple[str, str]]:
    return [(type(defect).__name__, str(defect)) for defect in header.defects]


def assert_same_message(fast: bytes, slow: bytes, subject: str) -> None:
    assert_wire_safe(fast)
    # RFC 5322 forbids a folded line of whitespace alone; the standard library writes one for a
    # few subjects that end in many spaces, and those the direct writer leaves to it.
    assert blank_header_lines(fast) <= blank_header_lines(slow)
    new, old = parse(fast), parse(slow)
    new_items, old_items = header_items(new), header_items(old)
    if new_items[0] != old_items[0]:
        # CPython's header folder mangles some long non-ASCII subjects (an extra space where it
        # starts an encoded-word on a new line, an encoded-word cut inside a UTF-8 sequence); the
        # direct writer then keeps the subject exactly as it is.
        assert new_items[0] == ("Subject", subject)
        new_items, old_items = new_items[1:], old_items[1:]
    assert new_items == old_items
    for name, value in new.items():
        assert defects(value) == defects(old[name]), name
    assert not new.defects
    assert new.get_content_type() == old.get_content_type()
    new_parts = list(new.iter_parts()) if new.is_multipart() else [new]
    old_parts = list(old.iter_parts()) if old.is_multipart() else [old]
    assert [p.get_content_type() for p in new_parts] == [p.get_content_type() for p in old_parts]
    for new_part, old_part in zip(new_parts, old_parts, strict=True):
        assert new_part.get_content() == old_part.get_content()
        assert new_part.get_content_charset() == old_part.get_content_charset()
        if new_part is not new:
            assert header_items(new_part, part=True) == header_items(old_part, part=True)
        new_cte, old_cte = new_part["Content-Transfer-Encoding"], old_part["Content-Transfer-Encoding"]
        assert (new_cte == "7bit") == (old_cte == "7bit")
        assert new_cte in {"7bit", "quoted-printable", "base64"}


def check(env: Envelope, from_address: str = FROM, domain: str = DOMAIN) -> bytes | None:
    fast, fast_error = outcome(lambda: build_message_bytes(env, from_address, domain, now=NOW))
    slow, slow_error = outcome(lambda: build_message(env, from_address, domain, now=NOW).as_bytes())
    assert fast_error == slow_error
    if slow is not None:
        assert fast is not None
        assert_same_message(fast, slow, str(env.parts.get("subject") or ""))
    return fast


# -- examples ---------------------------------------------------------------------------------------


def test_welcome_email_is_the_standard_library_message() -> None:
    html = "<html><body style='" + "margin:0; " * 20 + "'>\n<p>Welcome, Ada!</p>\n</body></html>\n"
    data = check(envelope(html=html))
    assert data is not None
    message = parse(data)
    assert message["Message-ID"] == "<msg_0001@acme.test>"
    assert message["Date"] == "Mon, 06 May 2024 07:08:09 +0000"
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_list_unsubscribe_stays_one_raw_line() -> None:
    data = build_message_bytes(envelope(), FROM, DOMAIN, now=NOW)
    assert f"List-Unsubscribe: {UNSUBSCRIBE['List-Unsubscribe']}\r\n".encode() in data
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in data


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="text-and-html"),
        pytest.param({"html": None}, id="text-only"),
        pytest.param({"text": None}, id="html-only"),
        pytest.param({"text": "", "html": "<p>x</p>"}, id="empty-text"),
        pytest.param({"subject": "Wëlcome, Ada 🎉"}, id="non-ascii-subject"),
        pytest.param({"subject": "Добро пожаловать, " * 8}, id="long-cyrillic-subject"),
        pytest.param({"subject": "A long subject line " * 10}, id="long-ascii-subject"),
        pytest.param({"subject": "x" * 300}, id="one-long-word-subject"),
        pytest.param({"subject": "  leading and trailing  "}, id="subject-spaces"),
        pytest.param({"subject": "x" * 60 + " " + "y" * 60 + " " * 30}, id="subject-many-trailing-spaces"),
        pytest.param({"subject": "a  b   " * 20}, id="subject-space-runs"),
        pytest.param({"subject": "x" * 70}, id="subject-one-word-on-its-own-line"),
        pytest.param({"subject": "x" * 68 + " 0"}, id="subject-value-on-its-own-line"),
        pytest.param({"subject": "x" * 70 + " é"}, id="subject-long-ascii-word-then-non-ascii"),
        pytest.param({"subject": "é " + "x" * 76 + " y"}, id="subject-non-ascii-then-long-word"),
        pytest.param(
            {"subject": "a " + "y" * 69 + " é " + "x" * 30 + " 🎉 é "}, id="subject-cpython-cuts-an-encoded-word"
        ),
        pytest.param({"subject": " é"}, id="subject-leading-space-non-ascii"),
        pytest.param({"subject": "tab\there"}, id="subject-tab"),
        pytest.param({"subject": "=?utf-8?q?hi?= there"}, id="subject-encoded-word"),
        pytest.param({"subject": ""}, id="empty-subject"),
        pytest.param({"subject": None}, id="no-subject"),
        pytest.param({"subject": 42, "text": 7}, id="non-string-parts"),
        pytest.param({"text": "Héllo\n" * 30, "html": "é" * 500}, id="qp-and-base64"),
        pytest.param({"text": "a" * 2000}, id="very-long-ascii-line"),
        pytest.param({"text": "a\r\nb\rc\nd"}, id="mixed-line-ends"),
        pytest.param({"text": "form\x0cfeed and \x00 nul"}, id="control-chars-in-body"),
        pytest.param({"text": ".\nFrom here\n--=_boundary\n"}, id="dots-and-from"),
        pytest.param({"address": "Ada Lovelace <ada@example.org>"}, id="display-name"),
        pytest.param({"address": '"ada lovelace"@example.org'}, id="quoted-local-part"),
        pytest.param({"address": "ada@bücher.example"}, id="international-domain"),
        pytest.param({"address": "user+" + "x" * 60 + "@example.org"}, id="long-address"),
        pytest.param({"message_id": "m" * 200}, id="long-message-id"),
        pytest.param({"message_id": "a..b"}, id="odd-message-id"),
        pytest.param({"headers": {"X-Campaign": "spring ünïcode"}}, id="non-ascii-extra-header"),
        pytest.param({"headers": {"Reply-To": "Ünï <r@example.org>"}}, id="non-ascii-structured-header"),
        pytest.param({"headers": {"X-Long": "v" * 990}}, id="extra-header-at-the-limit"),
        pytest.param({"headers": {"X-Empty": ""}}, id="empty-extra-header"),
    ],
)
def test_examples_match(fields: dict[str, Any]) -> None:
    check(envelope(**fields))


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"text": None, "html": None}, "empty_body", id="no-body"),
        pytest.param({"text": "", "html": ""}, "empty_body", id="empty-body"),
        pytest.param({"subject": "Hi\r\nBcc: victim@example.com"}, "bad_header", id="crlf-subject"),
        pytest.param({"subject": "Hi\0"}, "bad_header", id="nul-subject"),
        pytest.param({"subject": "Hi\x0bBcc: victim@example.com"}, "bad_header", id="vt-subject"),
        pytest.param({"subject": "Hi\u2028there"}, "bad_header", id="line-separator-subject"),
        pytest.param({"address": "ada@example.org\r\nBcc: v@example.com"}, "bad_header", id="crlf-address"),
        pytest.param({"address": "ada@example.org, eve@example.org"}, "bad_header", id="two-addresses"),
        pytest.param({"address": "not an address"}, "bad_header", id="no-address"),
        pytest.param({"address": ""}, "bad_header", id="empty-address"),
        pytest.param({"message_id": "msg\r\nX: y"}, "bad_header", id="crlf-message-id"),
        pytest.param({"message_id": "a b"}, "bad_header", id="space-message-id"),
        pytest.param({"headers": {"X-Note": "a\r\nBcc: v@example.com"}}, "bad_header", id="crlf-extra"),
        pytest.param({"headers": {"X-Note": "a\nBcc: v@example.com"}}, "bad_header", id="lf-extra"),
        pytest.param({"headers": {"X-Note": "a\x0bBcc: v@example.com"}}, "bad_header", id="vt-extra"),
        pytest.param({"headers": {"X-Note": "a\x0cBcc: v@example.com"}}, "bad_header", id="ff-extra"),
        pytest.param({"headers": {"X-Note": "a\x1cBcc: v@example.com"}}, "bad_header", id="fs-extra"),
        pytest.param({"headers": {"X-Note": "é\u2029Bcc: v@example.com"}}, "bad_header", id="ps-extra"),
        pytest.param({"headers": {"Bcc": "v@example.com"}}, "bad_header", id="reserved-bcc"),
        pytest.param({"headers": {"content-type": "text/html"}}, "bad_header", id="reserved-lowercase"),
        pytest.param({"headers": {"X-Bad Name": "v"}}, "bad_header", id="space-in-name"),
        pytest.param({"headers": {"X-Bad:Name": "v"}}, "bad_header", id="colon-in-name"),
        pytest.param({"headers": {"": "v"}}, "bad_header", id="empty-name"),
        pytest.param({"headers": {"X-Long": "v" * 997}}, "bad_header", id="over-long-extra"),
    ],
)
def test_refusals_match(fields: dict[str, Any], code: str) -> None:
    env = envelope(**fields)
    for build in (build_message_bytes, build_message):
        with pytest.raises(PermanentError) as caught:
            build(env, FROM, DOMAIN, now=NOW)
        assert caught.value.code == code
    check(env)


def test_vertical_tab_cannot_inject_a_header() -> None:
    # The standard library writes a raw header value line by line (str.splitlines), so before the
    # check covered them a vertical tab or form feed in an extra header started a new header line.
    env = envelope(headers={"X-Note": "spring\x0bBcc: victim@example.com"})
    with pytest.raises(PermanentError) as caught:
        build_message_bytes(env, FROM, DOMAIN)
    assert caught.value.code == "bad_header"


@pytest.mark.parametrize(
    "from_address",
    ["nobody", "a@example.com, b@example.com", "Acme <news@acme.test>\r\nBcc: v@example.com", ""],
)
def test_bad_from_address_is_refused_every_time(from_address: str) -> None:
    for _ in range(2):  # the From cache keeps good addresses only
        with pytest.raises(PermanentError) as caught:
            build_message_bytes(envelope(), from_address, DOMAIN)
        assert caught.value.code == "bad_header"
        check(envelope(), from_address)


@pytest.mark.parametrize(
    "from_address", ["news@acme.test", "Ünïcode Néws <news@acme.test>", '"Acme, Inc." <news@acme.test>']
)
def test_from_addresses_match(from_address: str) -> None:
    check(envelope(), from_address)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=250),
        st.lists(st.sampled_from(["a", "word", " ", "   ", "x" * 40, "y" * 69, "z" * 76, "q" * 80]), max_size=12).map(
            "".join
        ),
    )
)
def test_ascii_subjects_are_folded_byte_for_byte_like_the_standard_library(subject: str) -> None:
    line = mime._subject_header(subject)
    written = line if isinstance(line, bytes) else mime._stdlib_header(*line)  # left to it: same by definition
    assert written == mime._stdlib_header("Subject", subject)


def test_surrogates_fail_like_the_standard_library() -> None:
    check(envelope(text="bad \udcff surrogate"))
    check(envelope(subject="bad \udcff surrogate"))


def test_render_email_carries_the_smtp_envelope() -> None:
    plain = render_email(envelope(), FROM, DOMAIN, now=NOW)
    smtp_envelope = ("news@acme.test", "ada@example.org", "msg_0001@acme.test")
    assert (plain.sender, plain.recipient, plain.message_id) == smtp_envelope
    named = render_email(envelope(address="Ada Lovelace <ada@example.org>"), FROM, DOMAIN, now=NOW)
    assert named.recipient == "ada@example.org"
    # The fallback through the standard library carries the same envelope.
    odd = render_email(envelope(headers={"X-Campaign": "ünïcode"}), FROM, DOMAIN, now=NOW)
    assert (odd.sender, odd.recipient, odd.message_id) == smtp_envelope
    assert b"X-Campaign: =?utf-8?" in odd.data


def test_domain_of_is_cached_but_errors_are_not() -> None:
    assert mime.domain_of("Acme <news@acme.test>") == "acme.test"
    for _ in range(2):
        with pytest.raises(PermanentError):
            mime.domain_of("nobody")


def test_boundary_avoids_a_7bit_body(monkeypatch: pytest.MonkeyPatch) -> None:
    candidates = iter([b"=_taken", b"=_free"])
    monkeypatch.setattr(mime, "_boundary", lambda: next(candidates))
    data = build_message_bytes(envelope(text="--=_taken\n", html="<p>x</p>"), FROM, DOMAIN)
    assert b'boundary="=_free"' in data
    assert [part.get_content() for part in parse(data).iter_parts()] == ["--=_taken\r\n", "<p>x</p>\r\n"]


def test_date_is_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    date = parse(build_message_bytes(envelope(), FROM, DOMAIN))["Date"].datetime
    assert before <= date <= datetime.now(UTC)
    assert date.utcoffset() is not None and not date.utcoffset()


# -- properties -------------------------------------------------------------------------------------

# Characters that exercise the encoders: ASCII, Latin-1 (incl. C1 and NBSP), other scripts, emoji,
# and a few that are line breaks to str.splitlines.
_ALPHABET = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.sampled_from(list(" \t\n\r=?_.-<>\"'()@:;,\\")),
    st.characters(min_codepoint=0xA0, max_codepoint=0x17F),
    st.sampled_from(list("日本語Доброé€…🎉👍🏽\u00a0\u200b\ufeff")),
)
# ... plus, now and then, C0/C1 controls and characters str.splitlines() breaks at.
_ODD_ALPHABET = st.one_of(_ALPHABET, st.sampled_from(list("\x00\x01\x0b\x0c\x1b\x1c\x7f\x85\x9f\u2028")))
_WORDS = st.sampled_from(["Hello", "Ada", "welcome", "=?utf-8?q?x?=", "Wëlcome", "🎉", "x" * 90, " ", "  "])
_SUBJECT = st.one_of(
    st.text(_ALPHABET, max_size=120),
    st.text(_ALPHABET, max_size=120),
    st.text(_ODD_ALPHABET, max_size=120),
    st.lists(_WORDS, max_size=25).map(" ".join),
    st.lists(_WORDS, max_size=25).map("".join),
    st.none(),
)
_BODY_TEXT = st.one_of(
    st.text(_ALPHABET, min_size=1, max_size=400),
    st.text(_ODD_ALPHABET, min_size=1, max_size=400),
    st.lists(st.sampled_from(["line", "é", "a" * 100, "\n", "\r\n", " ", "=", ".", "🎉"]), min_size=1, max_size=60).map(
        "".join
    ),
)
_BODY = st.one_of(_BODY_TEXT, _BODY_TEXT, _BODY_TEXT, st.none(), st.just(""))

_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_PLAIN_ADDRESS = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.lists(st.text(_ATEXT, min_size=1, max_size=12), min_size=1, max_size=3).map(".".join),
    st.lists(st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True), min_size=1, max_size=3).map(
        ".".join
    ),
)
_ADDRESS = st.one_of(
    _PLAIN_ADDRESS,
    _PLAIN_ADDRESS,
    _PLAIN_ADDRESS,
    _PLAIN_ADDRESS,
    st.builds(lambda name, addr: f"{name} <{addr}>", st.text(_ALPHABET, max_size=20), _PLAIN_ADDRESS),
    st.sampled_from(["not an address", "a@b.org, c@d.org", "ada@bücher.example", '"a b"@example.org', "@x", "a@"]),
    st.text(_ODD_ALPHABET, max_size=30),
)
_MESSAGE_ID = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    st.text(_ATEXT + ". ", min_size=0, max_size=120),
)
_HEADER_NAME = st.one_of(
    st.sampled_from(["List-Unsubscribe", "List-Unsubscribe-Post", "X-Campaign", "Reply-To", "List-ID", "X-Mailer"]),
    st.sampled_from(["List-Unsubscribe", "List-Unsubscribe-Post", "X-Campaign", "Reply-To", "List-ID", "Bcc", "to"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=12),
)
_HEADER_VALUE = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),
    st.text(_ALPHABET, max_size=80),
    st.text(_ODD_ALPHABET, max_size=80),
    st.integers(min_value=900, max_value=1000).map(lambda n: "v" * n),
    st.just("<https://notify.example.com/u/" + "t" * 300 + ">"),
)
_HEADERS = st.one_of(st.just(UNSUBSCRIBE), st.dictionaries(_HEADER_NAME, _HEADER_VALUE, max_size=4))
_FROM = st.sampled_from(
    [FROM, FROM, FROM, "news@acme.test", "Ünïcode <news@acme.test>", "nobody", "Acme <a@b.test>, c@d.test"]
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=_SUBJECT,
    text=_BODY,
    html=_BODY,
    address=_ADDRESS,
    message_id=_MESSAGE_ID,
    headers=_HEADERS,
    from_address=_FROM,
)
@example(subject="é é  é x", text="x", html=None, address="a@b.c", message_id="m", headers={}, from_address=FROM)
@example(subject="é" * 60 + " x", text=None, html="y", address="a@b.c", message_id="m", headers={}, from_address=FROM)
def test_fast_bytes_are_the_standard_library_message(
    subject: str | None,
    text: str | None,
    html: str | None,
    address: str,
    message_id: str,
    headers: dict[str, str],
    from_address: str,
) -> None:
    env = envelope(subject=subject, text=text, html=html, address=address, message_id=message_id, headers=headers)
    check(env, from_address)


@settings(max_examples=500, deadline=None)
@given(subject=st.text(_ODD_ALPHABET, max_size=300), text=_BODY_TEXT)
def test_subjects_and_bodies_round_trip(subject: str, text: str) -> None:
    fast = check(envelope(subject=subject, text=text, html=None, headers={}))
    if fast is None:
        return
    message = parse(fast)
    # Lines split where the standard library splits them (CR, LF, CRLF), CRLF on the wire.
    assert message.get_content() == b"\r\n".join(text.encode().splitlines()).decode() + "\r\n"
    plain = "=?" not in subject and not subject.startswith(" ") and not re.search("[\x00-\x1f\x7f-\x9f]", subject)
    if plain and len(subject.split(" ", 1)[0]) <= 69:
        # Every character is kept; only where the standard library moves a whole ASCII subject to
        # the next line (and the direct writer does the same) does a reader see a leading space.
        assert message["Subject"] == subject or (subject.isascii() and message["Subject"] == " " + subject)


# -- the providers send the direct bytes -------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[FakeSmtp]:
    with FakeSmtp() as server:
        yield server


def provider_context(tmp_path: Path, name: str, settings: dict[str, Any]) -> ProviderContext:
    return ProviderContext(name=name, settings=settings, db_path=tmp_path / "notifyctl.db", base_dir=tmp_path)


async def smtp_send(tmp_path: Path, server: FakeSmtp, env: Envelope) -> Any:
    settings = {"host": server.host, "port": server.port, "from_address": FROM, "start_tls": False, "timeout_s": 5}
    provider = SmtpProvider(provider_context(tmp_path, "smtp", settings))
    await provider.open()
    try:
        return await provider.send(env)
    finally:
        await provider.close()


async def test_smtp_sends_the_direct_bytes(tmp_path: Path, smtp_server: FakeSmtp) -> None:
    result = await smtp_send(tmp_path, smtp_server, envelope(subject="Wëlcome, Ada"))

    assert result.provider_message_id == "msg_0001@acme.test"
    [mail] = smtp_server.messages
    assert (mail.mail_from, mail.rcpt_tos) == ("news@acme.test", ("ada@example.org",))
    # aiosmtplib's own flattening (policy.SMTP) RFC 2047-encoded a List-Unsubscribe over 78 characters.
    assert f"List-Unsubscribe: {UNSUBSCRIBE['List-Unsubscribe']}\r\n".encode() in mail.content
    assert_wire_safe(mail.content)
    message = parse(mail.content)
    assert message["Subject"] == "Wëlcome, Ada"
    assert [part.get_content() for part in message.iter_parts()] == [
        "Hi Ada,\r\nwelcome.\r\n",
        "<p>Hi <b>Ada</b></p>\r\n",
    ]


async def test_smtp_recipient_with_a_display_name(tmp_path: Path, smtp_server: FakeSmtp) -> None:
    await smtp_send(tmp_path, smtp_server, envelope(address="Ada Lovelace <ada@example.org>"))
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ("ada@example.org",)
    assert parse(mail.content)["To"] == "Ada Lovelace <ada@example.org>"


async def test_smtp_international_address_goes_through_smtputf8(tmp_path: Path, smtp_server: FakeSmtp) -> None:
    # As before: aiosmtplib's send_message asks for SMTPUTF8 and writes the headers in UTF-8.
    await smtp_send(tmp_path, smtp_server, envelope(address="ada@bücher.example"))
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ("ada@bücher.example",)
    assert "To: ada@bücher.example\r\n".encode() in mail.content


async def test_outbox_writes_the_direct_bytes(tmp_path: Path) -> None:
    provider = OutboxProvider(provider_context(tmp_path, "outbox", {"path": "mail", "from_address": FROM}))
    await provider.open()
    env = envelope()
    result = await provider.send(env)
    data = (tmp_path / "mail" / str(result.provider_message_id)).read_bytes()
    assert_wire_safe(data)
    assert_same_message(data, build_message(env, FROM, DOMAIN).as_bytes(), "Hello Ada")
