"""Audience files: the recipients a broadcast plans from, read from any row's end, and their columns."""

from __future__ import annotations

from collections.abc import Callable, Container, Generator, Mapping
from pathlib import Path
from typing import Any

from notifyctl.errors import RowError
from notifyctl.intake.fast import FastCsv, Row, contact_reader, others_getter
from notifyctl.intake.fields import CONTACT_FIELDS, USER_FIELDS, convert, recipient_builder, require_columns
from notifyctl.intake.lines import MAX_LINE_BYTES, LineSource, detect_format, open_binary
from notifyctl.intake.records import CsvFeed, Parsed, csv_header, read_records
from notifyctl.models import Recipient, trusted

COLUMN_SAMPLE_OBJECTS = 1000


def audience_header_check(path: Path) -> Callable[[list[str]], None]:
    """An audience's header names a user_id or a contact column."""
    return require_columns(path, any_of=("user_id", *CONTACT_FIELDS))


def iter_recipients(
    path: Path,
    *,
    start_offset: int = 0,
    start_line: int = 0,
    max_field_chars: int = 4096,
    skip_lines: Container[int] = (),
    default_region: str | None = None,
) -> Generator[Parsed[Recipient], None, None]:
    """Audience rows from `start_offset` (after the CSV header); `skip_lines` are left out.

    `start_line` is the number of physical lines before `start_offset`; when 0 and the offset is
    not, it is counted.

    CSV is read by the fast reader (`fast.FastCsv`), which gives the same rows, errors and offsets
    as the careful line-by-line reader.
    """
    fmt = detect_format(path)
    check = audience_header_check(path)
    if fmt == "csv":
        rows = FastCsv(
            path,
            check_header=check,
            max_field_chars=max_field_chars,
            rows_for=lambda header: _recipient_rows(header, default_region),
            build=recipient_builder(True, default_region),
            start_offset=start_offset,
            start_line=start_line,
            skip_lines=skip_lines,
            track_offset=True,
        )
        for line, end_line, item in rows:
            if isinstance(item, RowError):
                yield Parsed(None, item, line, rows.end_offset, end_line)
            else:
                yield Parsed(item, None, line, rows.end_offset, end_line)
        return
    records = read_records(
        path,
        start_offset=start_offset,
        start_line=start_line,
        max_field_chars=max_field_chars,
        check_header=check,
        fmt=fmt,
    )
    yield from convert(records, recipient_builder(False, default_region), skip_lines)


def _recipient_rows(header: list[str], default_region: str | None) -> Row[Recipient]:
    """A recipient from a CSV row's cells, for the fast reader."""
    contact = contact_reader(header, default_region, audience=True)
    data_of = others_getter(header, USER_FIELDS)

    def recipient(cells: list[str], line: int) -> Recipient:
        user_id, email, phone, locale, timezone, push_tokens, url, _ = contact(cells)
        return trusted(
            Recipient,
            line=line,
            user_id=user_id,
            email=email,
            phone=phone,
            locale=locale,
            timezone=timezone,
            push_tokens=push_tokens,
            webhook_url=url,
            data=data_of(cells),
        )

    return recipient


def audience_columns(path: Path) -> set[str]:
    """CSV header names, or the union of keys of the first 1000 JSONL objects (a `data` object's keys included)."""
    fmt = detect_format(path)
    columns: set[str] = set()
    if fmt == "csv":
        with open_binary(path) as fh:
            return set(csv_header(CsvFeed(LineSource(fh, 0, 0)), path))
    objects = 0
    records = read_records(path, max_field_chars=MAX_LINE_BYTES, fmt=fmt)
    try:
        for record in records:
            if record.fields is not None:
                add_columns(columns, record.fields)
                objects += 1
                if objects >= COLUMN_SAMPLE_OBJECTS:
                    break
    finally:
        records.close()
    return columns


def add_columns(columns: set[str], fields: Mapping[str, Any]) -> None:
    """The keys of a JSONL object, a `data` object's keys in place of `data`."""
    columns.update(fields)
    if isinstance(fields.get("data"), dict):
        columns.discard("data")
        columns.update(fields["data"])
