"""`validate_audience`: every row of an audience file checked in one streaming pass, before a
broadcast writes anything: errors, columns, sha256 and duplicate recipients."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from notifyctl.errors import RowError
from notifyctl.intake.audience import COLUMN_SAMPLE_OBJECTS, add_columns, audience_header_check
from notifyctl.intake.fast import FastCsv, Row, contact_reader
from notifyctl.intake.fields import Build, outcome, recipient_builder
from notifyctl.intake.lines import detect_format, open_binary
from notifyctl.intake.records import read_records
from notifyctl.models import Recipient
from notifyctl.store.duplicates import DuplicateFinder

MAX_REPORTED_ERRORS = 1000

# Each row of an audience, as validation sees it: its start and end lines and either its error or,
# for a valid row, its recipient's dedupe key.
_Outcome = tuple[int, int, "RowError | bytes"]


@dataclass
class ValidationReport:
    """The result of one streaming pass over an audience file."""

    rows: int
    valid: int
    errors: list[RowError]
    error_count: int
    columns: set[str]
    sha256: str
    duplicates: int
    duplicate_lines: set[int] = field(default_factory=set)


def validate_audience(
    path: Path, *, max_field_chars: int = 4096, default_region: str | None = None
) -> ValidationReport:
    """Parse every row in one streaming pass: errors, columns, sha256 and duplicate recipients.

    A CSV file goes through the fast reader (`fast.FastCsv`: every error worded and placed as by
    `iter_recipients`); JSONL through the careful reader."""
    fmt = detect_format(path)
    if fmt != "csv":
        return validate_line_by_line(path, fmt, max_field_chars, default_region)
    columns: set[str] = set()
    rows = FastCsv(
        path,
        check_header=_header_into(columns, path),
        max_field_chars=max_field_chars,
        rows_for=lambda header: _identity_rows(header, default_region),
        build=_dedupe_builder(recipient_builder(True, default_region)),
    )
    return _tally(rows, path, columns)


def validate_line_by_line(path: Path, fmt: str, max_field_chars: int, default_region: str | None) -> ValidationReport:
    """`validate_audience` through the careful reader only, record by record."""
    build = _dedupe_builder(recipient_builder(fmt == "csv", default_region))
    columns: set[str] = set()

    def outcomes() -> Iterator[_Outcome]:
        sampled = 0
        check = _header_into(columns, path)
        for record in read_records(path, max_field_chars=max_field_chars, check_header=check, fmt=fmt):
            if fmt == "jsonl" and record.fields is not None and sampled < COLUMN_SAMPLE_OBJECTS:
                add_columns(columns, record.fields)
                sampled += 1
            yield record.line, record.end_line, outcome(record, build)

    return _tally(outcomes(), path, columns)


def _header_into(columns: set[str], path: Path) -> Callable[[list[str]], None]:
    """The audience header check, which also adds a CSV header's names to `columns`."""
    check = audience_header_check(path)

    def check_and_keep(names: list[str]) -> None:
        check(names)
        columns.update(names)

    return check_and_keep


def _dedupe_builder(build: Build[Recipient]) -> Build[bytes]:
    return lambda fields, line: dedupe_key(build(fields, line))


def _identity_rows(header: list[str], default_region: str | None) -> Row[bytes]:
    """A valid recipient's dedupe key from a CSV row's cells, for the fast reader."""
    contact = contact_reader(header, default_region, audience=True)

    def identity(cells: list[str], line: int) -> bytes:
        user_id, email, phone, _, _, push_tokens, url, _ = contact(cells)
        return dedupe_identity(user_id, email, phone, push_tokens, url)

    return identity


def dedupe_key(recipient: Recipient) -> bytes:
    """What makes two valid rows the same recipient."""
    return dedupe_identity(
        recipient.user_id, recipient.email, recipient.phone, recipient.push_tokens, recipient.webhook_url
    )


def dedupe_identity(
    user_id: str | None, email: str | None, phone: str | None, push_tokens: list[str], webhook_url: str | None
) -> bytes:
    """What makes two valid rows the same recipient (as Recipient.identity, push tokens in any order)."""
    if user_id:
        identity = f"user:{user_id}"
    elif email:
        identity = f"email:{email}"
    elif phone:
        identity = f"phone:{phone}"
    elif push_tokens:
        identity = "push:" + "|".join(sorted(push_tokens))
    else:
        identity = f"webhook:{webhook_url}"
    # 128-bit digests keep the temporary database small whatever the identities look like.
    return hashlib.blake2b(identity.encode(), digest_size=16).digest()


def _tally(outcomes: Iterable[_Outcome], path: Path, columns: set[str]) -> ValidationReport:
    """Count the rows' outcomes into a report; duplicates are found in a temporary SQLite file.
    `columns` is read once the outcomes are (a CSV header's names are added as it is read)."""
    rows = valid = error_count = 0
    errors: list[RowError] = []
    with tempfile.TemporaryDirectory(prefix="notifyctl-audience-") as scratch:
        finder = DuplicateFinder(scratch)
        try:
            for line, _end_line, result in outcomes:
                rows += 1
                if isinstance(result, RowError):
                    error_count += 1
                    if len(errors) < MAX_REPORTED_ERRORS:
                        errors.append(result)
                    continue
                valid += 1
                finder.add(result, line)
            duplicate_lines: set[int] = set()
            for line, first_line in finder.duplicates():
                duplicate_lines.add(line)
                if len(errors) < 2 * MAX_REPORTED_ERRORS:
                    errors.append(RowError(line, f"duplicate recipient, first seen on line {first_line}"))
        finally:
            finder.close()
    errors.sort(key=lambda error: error.line)
    return ValidationReport(
        rows=rows,
        valid=valid - len(duplicate_lines),
        errors=errors[:MAX_REPORTED_ERRORS],
        error_count=error_count + len(duplicate_lines),
        columns=columns,
        sha256=_file_sha256(path),
        duplicates=len(duplicate_lines),
        duplicate_lines=duplicate_lines,
    )


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open_binary(path) as fh:
        while chunk := fh.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()
