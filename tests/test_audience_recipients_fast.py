"""`iter_recipients` on CSV (what a broadcast plans from) takes a fast path; it gives exactly the
line-by-line reader's rows, errors and resume offsets, from the start or from any row's end."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notifyctl.errors import InputError
from notifyctl.intake import fast as fast_reader
from notifyctl.intake.audience import iter_recipients
from notifyctl.intake.fields import CONTACT_FIELDS, convert, recipient_builder, require_columns
from notifyctl.intake.records import read_records
from tests.test_users_import import CELLS, RAW, csv_files, fast_path_limits


def _rows(read: Callable[[], Any]) -> tuple[str, Any]:
    try:
        rows = [(p.line, p.end_line, p.end_offset, p.value.model_dump() if p.value else None, p.error) for p in read()]
    except InputError as exc:
        return "input error", (str(exc), exc.rows)
    return "rows", rows


def _line_by_line(path: Path, **kwargs: Any) -> Any:
    skip_lines: Container[int] = kwargs.pop("skip_lines", ())
    records = read_records(path, check_header=require_columns(path, any_of=("user_id", *CONTACT_FIELDS)), **kwargs)
    return convert(records, recipient_builder(True, None), skip_lines)


def assert_same(
    content: bytes, *, max_field_chars: int = 4096, piece_bytes: int = 1 << 18, max_line: int = 0, skip: int = 0
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "audience.csv"
        path.write_bytes(content)
        with fast_path_limits(piece_bytes, max_line):
            slow = _rows(lambda: _line_by_line(path, max_field_chars=max_field_chars))
            fast = _rows(lambda: iter_recipients(path, max_field_chars=max_field_chars))
            assert fast == slow
            if slow[0] != "rows" or not slow[1]:
                return
            # Resumed after any row (as a crashed broadcast resumes), with lines to skip (duplicates).
            line, end_line, end_offset = slow[1][min(skip, len(slow[1]) - 1)][:3]
            skipped = {row[0] for row in slow[1][1::2]}
            kwargs = dict(start_offset=end_offset, start_line=end_line, max_field_chars=max_field_chars)
            slow = _rows(lambda: _line_by_line(path, **kwargs, skip_lines=skipped))
            fast = _rows(lambda: iter_recipients(path, **kwargs, skip_lines=skipped))
            assert fast == slow, (line, end_offset)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=csv_files(),
    max_field_chars=st.sampled_from([4096, 12]),
    piece_bytes=st.sampled_from([1 << 18, 64, 7]),
    max_line=st.sampled_from([0, 0, 60]),
    skip=st.integers(0, 12),
)
@example(
    content='user_id,email,first_name\nu1,a@example.com,Zoë\n\nu2,"b@exa\nmple.com",x\nu3,,Ådne\n'.encode(),
    max_field_chars=4096,
    piece_bytes=16,
    max_line=0,
    skip=1,
)
def test_fast_recipients_are_exactly_the_line_by_line_readers(
    content: bytes, max_field_chars: int, piece_bytes: int, max_line: int, skip: int
) -> None:
    assert_same(content, max_field_chars=max_field_chars, piece_bytes=piece_bytes, max_line=max_line, skip=skip)


@settings(max_examples=200, deadline=None)
@given(
    content=st.lists(st.sampled_from([b"user_id,email\n", *(c.encode() for c in CELLS), b",", *RAW]), max_size=30),
    skip=st.integers(0, 5),
)
def test_fast_recipients_match_on_arbitrary_fragments(content: list[bytes], skip: int) -> None:
    assert_same(b"".join(content), piece_bytes=16, skip=skip)


def test_a_clean_audience_is_read_without_the_line_by_line_reader(tmp_path: Path) -> None:
    path = tmp_path / "audience.csv"
    rows = ["user_id,email,first_name,plan"]
    rows += [f"u{i},u{i}@example.com,Zoë {i},pro" for i in range(2000)]
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    with mock.patch.object(fast_reader, "read_records", side_effect=AssertionError("slow path taken")):
        fast = list(iter_recipients(path))
    assert len(fast) == 2000 and all(p.value is not None for p in fast)
    assert fast[7].value is not None and fast[7].value.data == {"first_name": "Zoë 7", "plan": "pro"}
    assert fast[-1].end_offset == path.stat().st_size
    assert _rows(lambda: fast) == _rows(lambda: _line_by_line(path, max_field_chars=4096))


def test_the_line_by_line_reader_takes_over_after_the_last_row_given(tmp_path: Path) -> None:
    path = tmp_path / "audience.csv"
    path.write_bytes(b"user_id,email\n" + b"".join(b"u%d,u%d@example.com\n" % (i, i) for i in range(50)) + b"u\x00,x\n")
    taken_over: list[int] = []
    records = read_records

    def recorded(*args: Any, **kwargs: Any) -> Any:
        taken_over.append(kwargs["start_offset"])
        return records(*args, **kwargs)

    with fast_path_limits(64), mock.patch.object(fast_reader, "read_records", side_effect=recorded):
        fast = list(iter_recipients(path))
    assert len(taken_over) == 1 and 0 < taken_over[0] < path.stat().st_size  # not from the start
    assert [p.line for p in fast] == list(range(2, 53))
    assert fast[-1].error is not None and "NUL" in fast[-1].error.reason
    assert _rows(lambda: fast) == _rows(lambda: _line_by_line(path, max_field_chars=4096))
