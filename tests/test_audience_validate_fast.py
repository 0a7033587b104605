"""`validate_audience` on CSV takes a fast path; its report is exactly the line-by-line reader's."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notifyctl.errors import InputError
from notifyctl.intake import fast as fast_reader
from notifyctl.intake.validate import validate_audience, validate_line_by_line
from tests.test_users_import import CELLS, RAW, csv_files, fast_path_limits


def _report(read: Any) -> tuple[str, Any]:
    try:
        report = read()
    except InputError as exc:
        return "input error", (str(exc), exc.rows)
    return "report", report


def assert_same(content: bytes, *, max_field_chars: int = 4096, piece_bytes: int = 1 << 18, max_line: int = 0) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "audience.csv"
        path.write_bytes(content)
        with fast_path_limits(piece_bytes, max_line):
            fast = _report(lambda: validate_audience(path, max_field_chars=max_field_chars))
            slow = _report(lambda: validate_line_by_line(path, "csv", max_field_chars, None))
    assert fast == slow


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=csv_files(),
    max_field_chars=st.sampled_from([4096, 12]),
    piece_bytes=st.sampled_from([1 << 18, 64, 7]),
    max_line=st.sampled_from([0, 0, 60]),
)
@example(
    content=b'user_id,email\nu1,a@example.com\n\nu2,"b@exa\nmple.com"\nu1\n,\n',
    max_field_chars=4096,
    piece_bytes=16,
    max_line=0,
)
def test_fast_validation_reports_exactly_what_the_line_by_line_reader_reports(
    content: bytes, max_field_chars: int, piece_bytes: int, max_line: int
) -> None:
    assert_same(content, max_field_chars=max_field_chars, piece_bytes=piece_bytes, max_line=max_line)


@settings(max_examples=200, deadline=None)
@given(content=st.lists(st.sampled_from([b"user_id,email\n", *(c.encode() for c in CELLS), b",", *RAW]), max_size=30))
def test_fast_validation_matches_on_arbitrary_fragments(content: list[bytes]) -> None:
    assert_same(b"".join(content), piece_bytes=16)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"user_id,email\nu1,a@example.com\nu2,\x00\nu3,c@example.com\n", id="nul"),
        pytest.param(b"user_id,email\nu1,a@example.com\nu2,\xff\nu3,c@example.com\n", id="bad-utf8"),
        pytest.param(b'user_id,email\nu1,a@example.com\nu2,"x"y\nu3,c@example.com\n', id="malformed-csv"),
        pytest.param(b'user_id,email\nu1,a@example.com\nu2,"open\n', id="unterminated-quote"),
        pytest.param(b"\xef\xbb\xbfuser_id,email\nu1,a@example.com\n", id="leading-bom"),
        pytest.param(b"user_id,webhook_secret\nu1,whsec_x\n", id="secret-refused"),
        pytest.param(b"email,phone\nA@Example.com,\na@example.com,\n,+1 415 555 2671\n,+14155552671\n", id="dupes"),
        pytest.param(b"push_tokens,webhook_url\nb|a,\na;b,\n,https://h.example.com/1\n", id="token-dupes"),
        pytest.param(b"plan\npro\n", id="no-contact-column"),
        pytest.param(b"", id="empty"),
    ],
)
def test_fast_validation_hands_over_or_fails_as_the_reader_does(content: bytes) -> None:
    for piece_bytes in (1 << 18, 8):
        assert_same(content, piece_bytes=piece_bytes)


def test_a_clean_audience_never_takes_the_line_by_line_reader(tmp_path: Path) -> None:
    path = tmp_path / "audience.csv"
    rows = ["user_id,email,phone,push_tokens,webhook_url,first_name"]
    rows += [f"u{i},u{i}@example.com,,t{i},https://h.example.com/{i},Ada" for i in range(3000)]
    rows += ["u7,again@example.com,,,,Bob", ',"last@example.com",+1 415 555 2671,,,"multi\nline"']
    path.write_text("\r\n".join(rows) + "\r\n")
    with mock.patch.object(fast_reader, "read_records", side_effect=AssertionError("slow path taken")):
        report = validate_audience(path)
    assert (report.rows, report.valid, report.error_count, report.duplicates) == (3002, 3001, 1, 1)
    assert [(e.line, e.reason) for e in report.errors] == [(3002, "duplicate recipient, first seen on line 9")]
    assert report == validate_line_by_line(path, "csv", max_field_chars=4096, default_region=None)


def test_the_line_by_line_reader_takes_over_after_the_last_row_given(tmp_path: Path) -> None:
    path = tmp_path / "audience.csv"
    rows = b"".join(b"u%d,u%d@example.com\n" % (i, i) for i in range(50))
    path.write_bytes(b"user_id,email\n" + rows + b"u\x00,x\nu7,again@example.com\n")
    taken_over: list[int] = []
    records = fast_reader.read_records

    def recorded(*args: Any, **kwargs: Any) -> Any:
        taken_over.append(kwargs["start_offset"])
        return records(*args, **kwargs)

    with fast_path_limits(64), mock.patch.object(fast_reader, "read_records", side_effect=recorded):
        report = validate_audience(path)
    assert len(taken_over) == 1 and 0 < taken_over[0] < path.stat().st_size  # not from the start
    assert (report.rows, report.valid, report.error_count, report.duplicates) == (52, 50, 2, 1)
    assert [e.line for e in report.errors] == [52, 53]
    assert report == validate_line_by_line(path, "csv", max_field_chars=4096, default_region=None)
