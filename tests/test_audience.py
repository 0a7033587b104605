"""Streaming audience, user and event files: per-row errors with line numbers, resume, duplicates."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifyctl.cli.output import csv_safe
from notifyctl.errors import InputError, RowError
from notifyctl.intake.audience import audience_columns, iter_recipients
from notifyctl.intake.events import iter_events
from notifyctl.intake.lines import MAX_LINE_BYTES, detect_format
from notifyctl.intake.records import Parsed
from notifyctl.intake.spool import spool_stdin
from notifyctl.intake.users import iter_users
from notifyctl.intake.validate import ValidationReport, validate_audience
from notifyctl.models import Recipient

CSV_HEADER = b"user_id,email,city\n"
CSV_GOOD_BEFORE = b"u1,one@example.com,Paris\n"
CSV_GOOD_AFTER = b"u3,three@example.com,Lyon\n"


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def errors_of(results: list[Parsed[Any]]) -> list[RowError]:
    return [result.error for result in results if result.error is not None]


def values_of(results: list[Parsed[Any]]) -> list[Any]:
    return [result.value for result in results if result.value is not None]


# --- bad rows: every one reported with its line, the rows around it still come through -------

CSV_BAD_ROWS = [
    pytest.param(b"u2,\xff\xfeo@example.com,Nice\n", "invalid UTF-8 at byte offset 47", None, id="invalid-utf8"),
    pytest.param(b"u2,two@example.com,Ni\x00ce\n", "NUL byte", None, id="nul-byte"),
    pytest.param(b"\xef\xbb\xbfu2,two@example.com,Nice\n", "byte order mark", None, id="bom-mid-file"),
    pytest.param(b"u2,two@example.com," + b"x" * 4097 + b"\n", "longer than 4096 characters", "city", id="long-field"),
    pytest.param(b"u2,two@example.com," + b"x" * MAX_LINE_BYTES + b"\n", "longer than 1 MiB", None, id="long-line"),
    pytest.param(b"u2,two@example.com\n", "expected 3", None, id="too-few-fields"),
    pytest.param(b"u2,two@example.com,Nice,extra\n", "found 4", None, id="too-many-fields"),
    pytest.param(b"u2,not-an-email,Nice\n", "invalid email", "email", id="bad-email"),
    pytest.param(b",,Nice\n", "no user_id and no contact field", "user_id", id="no-contact"),
    pytest.param(b'u2,"two@example.com"x,Nice\n', "malformed CSV", None, id="junk-after-quote"),
    pytest.param(b"u2\rx,two@example.com,Nice\n", "malformed CSV", None, id="bare-carriage-return"),
    pytest.param(b"u\x01,two@example.com,Nice\n", "control characters", "user_id", id="control-char-user-id"),
]


@pytest.mark.parametrize(("bad_row", "reason", "field"), CSV_BAD_ROWS)
def test_csv_bad_row_is_reported_and_the_rest_continues(
    tmp_path: Path, bad_row: bytes, reason: str, field: str | None
) -> None:
    path = write(tmp_path, "audience.csv", CSV_HEADER + CSV_GOOD_BEFORE + bad_row + CSV_GOOD_AFTER)

    results = list(iter_recipients(path))

    assert [error.line for error in errors_of(results)] == [3]
    error = errors_of(results)[0]
    assert reason in error.reason
    assert error.field == field
    assert [(r.line, r.user_id) for r in values_of(results)] == [(2, "u1"), (4, "u3")]
    assert results[-1].end_offset == path.stat().st_size


CONTACT_FIELD_ERRORS = [
    pytest.param("phone", "12", "invalid phone", id="bad-phone"),
    pytest.param("timezone", "Mars/Olympus", "time zone", id="unknown-timezone"),
    pytest.param("timezone", "../../etc/passwd", "time zone", id="timezone-path"),
    pytest.param("locale", "english", "locale", id="bad-locale"),
    pytest.param("webhook_url", "ftp://hooks.example.com/x", "http(s)", id="webhook-not-http"),
    pytest.param("webhook_url", "https:///nohost", "http(s)", id="webhook-no-host"),
    pytest.param("webhook_url", "https://example.com:99999/", "not a valid URL", id="webhook-bad-port"),
    pytest.param("webhook_url", "https://exa mple.com/", "spaces", id="webhook-space"),
    pytest.param("push_tokens", "tok en", "push token", id="token-with-space"),
]


@pytest.mark.parametrize(("column", "value", "reason"), CONTACT_FIELD_ERRORS)
def test_contact_field_errors_name_the_field(tmp_path: Path, column: str, value: str, reason: str) -> None:
    path = write(tmp_path, "audience.csv", f"user_id,{column}\nu1,\nu2,{value}\nu3,\n".encode())

    results = list(iter_recipients(path))

    assert [(e.line, e.field) for e in errors_of(results)] == [(3, column)]
    assert reason in errors_of(results)[0].reason
    assert [r.user_id for r in values_of(results)] == ["u1", "u3"]


JSONL_GOOD_BEFORE = b'{"user_id": "u1", "email": "one@example.com"}\n'
JSONL_GOOD_AFTER = b'{"user_id": "u3", "email": "three@example.com"}\n'


def nested(levels: int) -> bytes:
    """An object holding `levels` levels of containers in all (the row object included)."""
    return b'{"user_id": "u2", "x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}\n"


JSONL_BAD_ROWS = [
    pytest.param(b"{not json}\n", "not valid JSON", None, id="not-json"),
    pytest.param(b'["u2"]\n', "not a JSON object", None, id="array-row"),
    pytest.param(b'"u2"\n', "not a JSON object", None, id="string-row"),
    pytest.param(b'{"user_id": "u2", "user_id": "u9"}\n', "duplicate key 'user_id'", None, id="duplicate-key"),
    pytest.param(b'{"user_id": "u2", "score": NaN}\n', "NaN is not allowed", None, id="nan"),
    pytest.param(b'{"user_id": "u2", "score": -Infinity}\n', "-Infinity is not allowed", None, id="infinity"),
    pytest.param(b'{"user_id": "u2", "score": 1e999}\n', "out of range", None, id="float-overflow"),
    pytest.param(nested(9), "nesting deeper than 8", None, id="nesting-9"),
    pytest.param(nested(100_000), "nesting deeper than 8", None, id="nesting-100000"),
    pytest.param(b'{"user_id": "u2", "n": "\xc3\x28"}\n', "invalid UTF-8 at byte offset 117", None, id="invalid-utf8"),
    pytest.param(b'{"user_id": "u2\x00"}\n', "NUL byte", None, id="nul-byte"),
    pytest.param(b'\xef\xbb\xbf{"user_id": "u2"}\n', "byte order mark", None, id="bom-mid-file"),
    pytest.param(b'{"user_id": "u2", "a": {"b": "' + b"x" * 4097 + b'"}}\n', "longer than 4096", "a", id="long-nested"),
    pytest.param(b'{"user_id": "u2", "' + b"k" * 4097 + b'": 1}\n', "longer than 4096", "k" * 80, id="long-key"),
    pytest.param(b'{"user_id": "' + b"x" * MAX_LINE_BYTES + b'"}\n', "longer than 1 MiB", None, id="long-line"),
    pytest.param(b'{"user_id": "u2", "push_tokens": "abc"}\n', "list of strings", "push_tokens", id="tokens-not-list"),
    pytest.param(b'{"user_id": ["u2"]}\n', "must be a string", "user_id", id="user-id-not-string"),
    pytest.param(b'{"user_id": "u2", "data": 3}\n', "must be a JSON object", "data", id="data-not-object"),
    pytest.param(b'{"city": "Nice"}\n', "no user_id and no contact field", "user_id", id="no-contact"),
    pytest.param(b'{"user_id": "u2", "webhook_secret": "whsec_x"}\n', "not accepted", "webhook_secret", id="secret"),
]


@pytest.mark.parametrize(("bad_row", "reason", "field"), JSONL_BAD_ROWS)
def test_jsonl_bad_row_is_reported_and_the_rest_continues(
    tmp_path: Path, bad_row: bytes, reason: str, field: str | None
) -> None:
    # A blank line before the bad row: ignored, but still counted as a physical line.
    path = write(
        tmp_path,
        "audience.jsonl",
        JSONL_GOOD_BEFORE + b"\n" + JSONL_GOOD_BEFORE.replace(b"u1", b"u0") + bad_row + JSONL_GOOD_AFTER,
    )

    results = list(iter_recipients(path))

    assert [error.line for error in errors_of(results)] == [4]
    error = errors_of(results)[0]
    assert reason in error.reason
    assert error.field == field
    assert [(r.line, r.user_id) for r in values_of(results)] == [(1, "u1"), (3, "u0"), (5, "u3")]


def test_eight_levels_of_nesting_are_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.jsonl", nested(8))

    (result,) = iter_recipients(path)

    assert result.error is None


def test_max_field_chars_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", b"user_id,city\nu1,abcdef\nu2,abc\n")

    results = list(iter_recipients(path, max_field_chars=3))

    assert [(e.line, e.field) for e in errors_of(results)] == [(2, "city")]
    assert [r.user_id for r in values_of(results)] == ["u2"]


def test_bad_line_inside_a_multiline_field_rejects_that_record_only(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", b'user_id,note\nu1,"a\nb\xff\nc"\nu2,ok\n')

    results = list(iter_recipients(path))

    assert [(e.line, "invalid UTF-8" in e.reason) for e in errors_of(results)] == [(2, True)]
    assert [(r.line, r.data) for r in values_of(results)] == [(5, {"note": "ok"})]


def test_unterminated_quote_at_the_end_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", b'user_id,note\nu1,ok\nu2,"never closed\nmore\n')

    results = list(iter_recipients(path))

    assert [(e.line, "malformed CSV" in e.reason) for e in errors_of(results)] == [(3, True)]
    assert [r.user_id for r in values_of(results)] == ["u1"]


# --- header and file-level errors -----------------------------------------------------------

FILE_ERRORS = [
    pytest.param(
        "a.csv", b"email,email\nx@example.com,y@example.com\n", "duplicate column name 'email'", id="dup-header"
    ),
    pytest.param("a.csv", b"user_id,,city\nu1,,Paris\n", "empty column name", id="empty-header-name"),
    pytest.param("a.csv", b"city,country\nParis,FR\n", "needs at least one of the columns", id="no-contact-column"),
    pytest.param("a.csv", b"", "no header row", id="empty-csv"),
    pytest.param("a.csv", b"\n\n", "no header row", id="blank-csv"),
    pytest.param("a.csv", b"user_id,\xffemail\nu1,x\n", "bad header row", id="header-invalid-utf8"),
    pytest.param("a.txt", b"", "empty", id="empty-unknown-extension"),
    pytest.param("a.txt", b'  [{"user_id": "u1"}]', "JSON array", id="json-array"),
    pytest.param("a.txt", b"\x00\x01\x02", "unknown format", id="binary"),
    pytest.param("missing.csv", None, "cannot read", id="missing-file"),
]


@pytest.mark.parametrize(("name", "content", "message"), FILE_ERRORS)
def test_file_level_errors_raise_input_error_before_any_row(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(InputError, match=message.replace("(", r"\(")) as raised:
        next(iter_recipients(path))
    assert all(row.line >= 1 and row.reason for row in raised.value.rows)
    with pytest.raises(InputError):
        validate_audience(path)


def test_users_need_a_user_id_column(tmp_path: Path) -> None:
    path = write(tmp_path, "users.csv", b"email\nx@example.com\n")

    with pytest.raises(InputError, match=r"missing required column.*user_id"):
        list(iter_users(path))


def test_events_must_be_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", b"event_id,user_id,template\ne1,u1,welcome\n")

    with pytest.raises(InputError, match="JSONL"):
        iter_events(path)


# --- BOM, formats, normalisation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("a.csv", b"\xef\xbb\xbfuser_id,email\nu1,one@example.com\n", id="csv"),
        pytest.param("a.jsonl", b'\xef\xbb\xbf{"user_id": "u1", "email": "one@example.com"}\n', id="jsonl"),
        pytest.param("stdin.input", b'\xef\xbb\xbf  \n{"user_id": "u1", "email": "one@example.com"}\n', id="sniffed"),
    ],
)
def test_a_bom_at_the_start_is_accepted_and_stripped(tmp_path: Path, name: str, content: bytes) -> None:
    path = write(tmp_path, name, content)

    results = list(iter_recipients(path))

    assert errors_of(results) == []
    assert [(r.user_id, r.email) for r in values_of(results)] == [("u1", "one@example.com")]
    assert "user_id" in audience_columns(path)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param("a.csv", b'{"looks": "json"}', "csv", id="csv-extension-wins"),
        pytest.param("a.JSONL", b"user_id\n", "jsonl", id="jsonl-extension"),
        pytest.param("a.ndjson", b"", "jsonl", id="ndjson"),
        pytest.param("a.json-lines", b"", "jsonl", id="json-lines"),
        pytest.param("a.input", b'\n  {"user_id": "u1"}\n', "jsonl", id="sniff-object"),
        pytest.param("a.input", b"user_id,email\n", "csv", id="sniff-csv"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    assert detect_format(write(tmp_path, name, content)) == expected


def test_contact_fields_are_normalised(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "audience.csv",
        b"email,phone,locale,timezone,push_tokens,webhook_url,first_name\n"
        b"Ann@Example.COM,(415) 555-2671,pt_br,America/Sao_Paulo, t1 | t2;t1 ,https://hooks.example.com/x,=1+1\n",
    )

    (result,) = iter_recipients(path, default_region="US")

    assert result.value == Recipient(
        line=2,
        email="ann@example.com",
        phone="+14155552671",
        locale="pt-BR",
        timezone="America/Sao_Paulo",
        push_tokens=["t1", "t2"],
        webhook_url="https://hooks.example.com/x",
        data={"first_name": "=1+1"},  # formula-looking cells are fine on input
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("en", "en", id="language"),
        pytest.param("fr-ca", "fr-CA", id="region"),
        pytest.param("pt_BR", "pt-BR", id="underscore"),
        pytest.param("zh_hant_tw", "zh-Hant-TW", id="script"),
        pytest.param("es-419", "es-419", id="numeric-region"),
    ],
)
def test_locale_shapes(tmp_path: Path, raw: str, expected: str) -> None:
    path = write(tmp_path, "a.jsonl", json.dumps({"user_id": "u1", "locale": raw}).encode())

    (result,) = iter_recipients(path)

    assert result.value is not None and result.value.locale == expected


def test_jsonl_recipient_data_keeps_json_values(tmp_path: Path) -> None:
    row = {"email": "a@example.com", "push_tokens": ["t1"], "data": {"plan": "pro"}, "n": 3, "tags": ["x"]}
    path = write(tmp_path, "a.jsonl", json.dumps(row).encode() + b"\n")

    (result,) = iter_recipients(path)

    assert result.value is not None
    assert result.value.data == {"plan": "pro", "n": 3, "tags": ["x"]}
    assert result.value.push_tokens == ["t1"]
    assert audience_columns(path) == {"email", "push_tokens", "plan", "n", "tags"}


# --- users ----------------------------------------------------------------------------------


def test_users_from_csv_with_attributes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "users.csv",
        b"user_id,email,push_tokens,webhook_url,webhook_secret,plan,signup\n"
        b"u1,A@example.com,t1;t2,https://h.example.com/,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,pro,2024\n"
        b"u2,,,,,free,\n"
        b",b@example.com,,,,free,\n"
        b"u4,,,,secret,free,\n",
    )

    results = list(iter_users(path))

    first, second = values_of(results)
    assert first.email == "a@example.com"
    assert first.push_tokens == ["t1", "t2"]
    assert first.webhook_secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert first.attributes == {"plan": "pro", "signup": "2024"}
    assert second.attributes == {"plan": "free", "signup": ""}
    assert [(e.line, e.field) for e in errors_of(results)] == [(4, "user_id"), (5, "webhook_secret")]
    assert "secret" not in errors_of(results)[1].reason.replace("webhook_secret", "")


def test_users_from_jsonl_merge_the_attributes_object(tmp_path: Path) -> None:
    rows = [
        {"user_id": 42, "locale": "fr_CA", "attributes": {"plan": "pro", "seats": 3}, "vip": True},
        {"user_id": "u2", "attributes": ["not", "an", "object"]},
        {"email": "no-id@example.com"},
    ]
    path = write(tmp_path, "users.jsonl", b"\n".join(json.dumps(row).encode() for row in rows))

    results = list(iter_users(path))

    (user,) = values_of(results)
    assert (user.user_id, user.locale) == ("42", "fr-CA")
    assert user.attributes == {"plan": "pro", "seats": 3, "vip": True}
    assert [(e.line, e.field) for e in errors_of(results)] == [(2, "attributes"), (3, "user_id")]


# --- events ---------------------------------------------------------------------------------


def test_events_jsonl(tmp_path: Path) -> None:
    rows: list[Any] = [
        {"event_id": "e1", "user_id": "u1", "template": "welcome", "data": {"n": 1}, "channels": ["email", "email"]},
        {"event_id": "", "user_id": "u1", "template": "welcome"},
        {"event_id": "e\u00073", "user_id": "u1", "template": "welcome"},
        {"event_id": "e4", "user_id": "u1"},
        {"event_id": "e5", "user_id": "u1", "template": "welcome", "channels": ["fax"]},
        {"event_id": "e6", "user_id": "u1", "template": "welcome", "chanels": ["sms"]},
        {"event_id": 7, "user_id": "u1", "template": "welcome"},
        {"event_id": "e8", "user_id": "u2", "template": "receipt", "category": "billing"},
    ]
    path = write(tmp_path, "events.ndjson", b"\n".join(json.dumps(row).encode() for row in rows) + b"\n")

    results = list(iter_events(path))

    assert [(e.event_id, e.channels, e.data, e.category) for e in values_of(results)] == [
        ("e1", ["email"], {"n": 1}, None),
        ("e8", None, {}, "billing"),
    ]
    problems = [(e.line, e.field) for e in errors_of(results)]
    assert problems == [
        (2, "event_id"),
        (3, "event_id"),
        (4, "template"),
        (5, "channels"),
        (6, "chanels"),
        (7, "event_id"),
    ]
    reasons = [e.reason for e in errors_of(results)]
    assert "empty" in reasons[0] and "control characters" in reasons[1] and "fax" in reasons[3]


# --- resume ---------------------------------------------------------------------------------

RESUME_FILES = [
    pytest.param(
        "a.csv",
        b'\xef\xbb\xbfuser_id,note\r\nu1,plain\r\nu2,"two\r\nlines"\r\n\r\nbad\xff,x\r\nu3,"x\ny\nz"\r\nu4,last',
        id="csv",
    ),
    pytest.param(
        "a.jsonl",
        b'\xef\xbb\xbf{"user_id": "u1"}\n\n{"user_id": "u2"}\nnot json\n{"user_id": "u3"}\n\n{"user_id": "u4"}',
        id="jsonl",
    ),
]


@pytest.mark.parametrize(("name", "content"), RESUME_FILES)
@pytest.mark.parametrize("count_lines", [pytest.param(False, id="given-line"), pytest.param(True, id="counted-line")])
def test_resume_from_end_offset_yields_exactly_the_remaining_rows(
    tmp_path: Path, name: str, content: bytes, count_lines: bool
) -> None:
    path = write(tmp_path, name, content)
    everything = list(iter_recipients(path))
    assert len(everything) == 5

    for done, last in enumerate(everything, start=1):
        start_line = 0 if count_lines else last.end_line
        rest = list(iter_recipients(path, start_offset=last.end_offset, start_line=start_line))
        assert rest == everything[done:]


def test_events_resume_from_end_offset(tmp_path: Path) -> None:
    rows = [{"event_id": f"e{i}", "user_id": "u1", "template": "welcome"} for i in range(4)]
    path = write(tmp_path, "events.jsonl", b"\n\n".join(json.dumps(row).encode() for row in rows))
    everything = list(iter_events(path))

    rest = list(iter_events(path, start_offset=everything[1].end_offset, start_line=everything[1].end_line))

    assert [(p.line, p.value.event_id if p.value else None) for p in rest] == [(5, "e2"), (7, "e3")]
    assert rest == everything[2:]


def test_resume_from_offset_zero_skips_the_csv_header(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", b"user_id\nu1\nu2\n")

    assert [p.line for p in iter_recipients(path, start_offset=0)] == [2, 3]
    assert [p.line for p in iter_recipients(path, start_offset=3)] == [2, 3]


# --- validation pass and duplicates ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param(
            "a.csv",
            b"user_id,email,phone\nu1,,\n,Ann@example.com,\nu1,,\n,,+14155552671\n,ann@EXAMPLE.com,\n,bad,\nu1,,\n",
            id="csv",
        ),
        pytest.param(
            "a.jsonl",
            b'{"user_id": "u1"}\n{"email": "Ann@example.com"}\n{"user_id": "u1"}\n{"phone": "+14155552671"}\n'
            b'{"email": "ann@EXAMPLE.com"}\n{"email": "bad"}\n{"user_id": "u1", "city": "Nice"}\n',
            id="jsonl",
        ),
    ],
)
def test_validate_audience_reports_duplicates_with_both_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: bytes
) -> None:
    path = write(tmp_path, name, content)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    first_row = 2 if name.endswith(".csv") else 1

    report = validate_audience(path)

    def line(n: int) -> int:
        return first_row + n

    assert report.rows == 7
    assert [(e.line, e.reason) for e in report.errors] == [
        (line(2), f"duplicate recipient, first seen on line {line(0)}"),
        (line(4), f"duplicate recipient, first seen on line {line(1)}"),
        (line(5), "invalid email address: An email address must have an @-sign."),
        (line(6), f"duplicate recipient, first seen on line {line(0)}"),
    ]
    assert report.duplicate_lines == {line(2), line(4), line(6)}
    assert (report.duplicates, report.error_count, report.valid) == (3, 4, 3)
    assert report.sha256 == hashlib.sha256(content).hexdigest()
    assert {"user_id", "email", "phone"} <= report.columns
    assert list(scratch.iterdir()) == []  # the temporary identity database is gone

    kept = list(iter_recipients(path, skip_lines=report.duplicate_lines))
    assert [p.line for p in kept] == [line(0), line(1), line(3), line(5)]


def test_push_and_webhook_only_recipients_are_not_all_duplicates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.csv",
        b"push_tokens,webhook_url\nt1,\nt2,\nt1,\n,https://a.example.com/\n,https://b.example.com/\n",
    )

    report = validate_audience(path)

    assert [(e.line, e.reason) for e in report.errors] == [(4, "duplicate recipient, first seen on line 2")]


def test_validate_audience_keeps_the_first_thousand_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", b"email\n" + b"bad\n" * 1500 + b"u@example.com\n" * 3)

    report = validate_audience(path)

    assert (report.rows, report.valid, report.error_count, report.duplicates) == (1503, 1, 1502, 2)
    assert len(report.errors) == 1000
    assert [e.line for e in report.errors] == list(range(2, 1002))


def test_audience_columns_samples_the_first_thousand_jsonl_objects(tmp_path: Path) -> None:
    lines = [b'{"user_id": "u%d", "a": 1}' % i for i in range(1000)] + [b"oops", b'{"user_id": "late", "b": 2}']
    path = write(tmp_path, "a.jsonl", b"\n".join([b"not json", *lines]))

    assert audience_columns(path) == {"user_id", "a"}
    assert audience_columns(write(tmp_path, "b.csv", b"user_id, email \n")) == {"user_id", "email"}


def test_spool_stdin_allows_two_passes(tmp_path: Path) -> None:
    content = b'{"event_id": "e1", "user_id": "u1", "template": "t"}\n'

    spooled = spool_stdin(io.BytesIO(content), directory=tmp_path)

    assert spooled.parent == tmp_path
    assert spooled.read_bytes() == content
    assert spooled.stat().st_mode & 0o077 == 0  # personal data: readable by the owner only
    assert [e.event_id for e in values_of(list(iter_events(spooled)))] == ["e1"]
    assert [e.event_id for e in values_of(list(iter_events(spooled)))] == ["e1"]


# --- output escaping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")', id="equals"),
        pytest.param("+1+1", "'+1+1", id="plus"),
        pytest.param("-2+3", "'-2+3", id="minus"),
        pytest.param("@SUM(A1)", "'@SUM(A1)", id="at"),
        pytest.param("\t=1", "'\t=1", id="tab"),
        pytest.param("\r=1", "'\r=1", id="carriage-return"),
        pytest.param("a=1", "a=1", id="equals-inside"),
        pytest.param("", "", id="empty"),
        pytest.param("Ann", "Ann", id="plain"),
    ],
)
def test_csv_safe_escapes_formulas(value: str, expected: str) -> None:
    assert csv_safe(value) == expected


# --- arbitrary bytes ------------------------------------------------------------------------

FRAGMENTS = [
    b"user_id,email,push_tokens\n",
    b"user_id",
    b",",
    b"\n",
    b"\r\n",
    b"\r",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b'"user_id"',
    b'"email"',
    b'"a@example.com"',
    b"NaN",
    b"1e999",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\xff",
    b"\xc3",
    b'{"user_id": "u1"}\n',
    b'{"event_id": "e", "user_id": "u", "template": "t"}\n',
    b"u1,a@example.com,t1|t2\n",
]
ARBITRARY_BYTES = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=8), max_size=40).map(b"".join),
)


def check_errors(results: list[Parsed[Any]]) -> None:
    for result in results:
        assert (result.value is None) != (result.error is None)
        if result.error is not None:
            assert result.error.line >= 1 and result.error.reason


def read_all(reader: Callable[[Path], Iterable[Parsed[Any]]], path: Path) -> list[Parsed[Any]]:
    return list(reader(path))


def expect_only_input_error(read: Callable[[], object]) -> object:
    try:
        return read()
    except InputError as exc:
        assert str(exc)
        assert all(row.line >= 1 and row.reason for row in exc.rows)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=ARBITRARY_BYTES)
def test_arbitrary_bytes_raise_nothing_but_input_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        for name in ("a.csv", "a.jsonl"):
            path = Path(directory) / name
            path.write_bytes(content)
            report = expect_only_input_error(functools.partial(validate_audience, path))
            if isinstance(report, ValidationReport):
                assert all(error.line >= 1 and error.reason for error in report.errors)
                assert report.sha256 == hashlib.sha256(content).hexdigest()
            for reader in (iter_recipients, iter_users, iter_events):
                results = expect_only_input_error(functools.partial(read_all, reader, path))
                check_errors(results if isinstance(results, list) else [])
            expect_only_input_error(functools.partial(audience_columns, path))
