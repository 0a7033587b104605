"""The fast CSV reader, and its one hand-over to the careful reader.

Users import, audience validation and planning read CSV the same way: the header as the careful
reader (`records.py`) reads it, its errors too; then the records from large decoded pieces
(`lines.Pieces`) straight into csv.reader. A row whose cells pass cheap checks is converted in
place by the caller's row function; any other row goes through the caller's full builder, so its
error is worded and placed exactly as the careful reader would. Should the file hold something only
the careful reader reports (a NUL, a stray BOM, invalid UTF-8, an over-long line, malformed CSV),
the careful reader takes over from the record after the last one read: the rows, errors and offsets
given are the careful reader's, only sooner.
"""

from __future__ import annotations

import csv
import itertools
import operator
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from notifyctl.addresses import AddressError, normalize_email, normalize_phone
from notifyctl.errors import RowError
from notifyctl.intake.fields import Build, FieldError, known_zones, normal_locale, outcome, push_tokens, webhook_url
from notifyctl.intake.lines import LineSource, Pieces, SlowPath, count_lines, offset_after_lines, open_binary
from notifyctl.intake.records import CsvFeed, csv_header, csv_record, read_records

Y = TypeVar("Y")

ContactCells = tuple[str | None, str | None, str | None, str | None, str | None, list[str], str | None, str | None]
"""A row's contact cells, checked and normalised: user_id, email, phone, locale, timezone,
push_tokens, webhook_url, webhook_secret (None where empty)."""

Row = Callable[[list[str], int], Y]
"""Converts a row's cells (with "" appended) and start line; raises Unusual, FieldError or
AddressError where the full builder must decide (and word the error)."""

_CONTACT_COLUMNS = ("user_id", "email", "phone", "locale", "timezone", "push_tokens", "webhook_url", "webhook_secret")


class Unusual(Exception):
    """A row the fast checks do not accept as it is: the full builder decides (and words the error)."""


def contact_reader(
    header: list[str], default_region: str | None, *, audience: bool
) -> Callable[[list[str]], ContactCells]:
    """The contact cells of a row (cells with "" appended: an absent column reads that one), checked
    and normalised as `fields` checks them; raises Unusual, FieldError or AddressError where the
    full builder must decide. With `audience`, also Unusual for a webhook_secret (refused in
    audience files) and for a row with no way to reach anyone: the builder words both."""
    at = {name: i for i, name in enumerate(header)}
    i_user, i_email, i_phone, i_locale, i_timezone, i_tokens, i_url, i_secret = (
        at.get(name, len(header)) for name in _CONTACT_COLUMNS
    )
    i_service = at.get("push_service", len(header))
    zones = known_zones()

    def contact(cells: list[str]) -> ContactCells:
        user_id = cells[i_user].strip() or None
        if user_id is not None and not user_id.isprintable():  # isprintable: no control characters
            raise Unusual
        email: str | None = cells[i_email].strip() or None
        if email is not None:
            email = normalize_email(email)
        phone: str | None = cells[i_phone].strip() or None
        if phone is not None:
            phone = normalize_phone(phone, default_region)
        locale: str | None = cells[i_locale].strip() or None
        if locale is not None:
            locale = normal_locale(locale)
        timezone = cells[i_timezone].strip() or None
        if timezone is not None and timezone not in zones:
            raise Unusual
        tokens = cells[i_tokens]
        service = cells[i_service]
        tokens_list = push_tokens(tokens, from_csv=True, service=service.strip()) if tokens or service else []
        url: str | None = cells[i_url].strip() or None
        if url is not None:
            url = webhook_url(url)
        secret = cells[i_secret].strip() or None
        if audience and (secret is not None or not (user_id or email or phone or tokens_list or url)):
            raise Unusual
        return user_id, email, phone, locale, timezone, tokens_list, url, secret

    return contact


def others_getter(header: list[str], known: frozenset[str]) -> Callable[[list[str]], dict[str, Any]]:
    """What `fields` makes of a CSV row's other columns (attributes, data): by name, in header order."""
    extras = [(name, i) for i, name in enumerate(header) if name not in known]
    if not extras:
        return lambda cells: {}
    if len(extras) == 1:
        ((name, i),) = extras
        return lambda cells: {name: cells[i]}
    names = [name for name, _i in extras]
    values = operator.itemgetter(*(i for _name, i in extras))
    return lambda cells: dict(zip(names, values(cells), strict=True))


def _full_row(
    header: list[str], cells: list[str], line: int, end_line: int, max_field_chars: int, build: Build[Y]
) -> Y | RowError | None:
    """One CSV row through the full builder, as the careful reader reads it: its value, its error,
    or None for a blank row (skipped)."""
    if not any(cell.strip() for cell in cells):
        return None
    return outcome(csv_record(header, cells, line, end_line, 0, max_field_chars), build)


class FastCsv(Generic[Y]):
    """The (start line, end line, value or error) of each CSV record, read fast (see the module).

    `rows_for(header)` gives the row function for the file's columns; `build` is the full builder
    (as the careful reader builds each record). `end_offset` is the byte offset just after the
    record last given when `track_offset` (it costs a little per line); `header` is the header read.
    """

    def __init__(
        self,
        path: Path,
        *,
        check_header: Callable[[list[str]], None],
        max_field_chars: int,
        rows_for: Callable[[list[str]], Row[Y]],
        build: Build[Y],
        start_offset: int = 0,
        start_line: int = 0,
        skip_lines: Container[int] = (),
        track_offset: bool = False,
    ) -> None:
        """`start_offset`, `start_line`, `skip_lines`: as the careful reader takes them."""
        self.path = path
        self.check_header = check_header
        self.max_field_chars = max_field_chars
        self.rows_for = rows_for
        self.build = build
        self.start_offset = start_offset
        self.start_line = start_line
        self.skip_lines = skip_lines
        self.track_offset = track_offset
        self.header: list[str] = []
        self.end_offset = 0

    def __iter__(self) -> Iterator[tuple[int, int, Y | RowError]]:
        """Each record's start line, end line and value or error, in file order (blank rows left out)."""
        max_field_chars, skip_lines, build = self.max_field_chars, self.skip_lines, self.build
        with open_binary(self.path) as fh:
            feed = CsvFeed(LineSource(fh, 0, 0))
            header = self.header = csv_header(feed, self.path)
            self.check_header(header)
            first, start = feed.source.line, feed.source.offset
            if self.start_offset > start:
                first, start = self.start_line or count_lines(fh, self.start_offset), self.start_offset
            fh.seek(start)
            self.end_offset = start
            row = self.rows_for(header)
            width = len(header) + 1  # a record of the header's shape, with "" appended
            end = first
            pieces = Pieces(fh)
            lines = self._counted(pieces) if self.track_offset else itertools.chain.from_iterable(pieces)
            reader = csv.reader(lines, strict=True)
            try:
                for cells in reader:
                    line, end = end + 1, first + reader.line_num
                    if line in skip_lines:
                        continue
                    cells.append("")
                    item: Y | RowError | None
                    try:
                        # No cell is longer than the record's line; a record of several lines is measured.
                        if len(cells) != width or (
                            (pieces.longest > max_field_chars or end != line) and max(map(len, cells)) > max_field_chars
                        ):
                            raise Unusual
                        item = row(cells, line)
                    except (Unusual, FieldError, AddressError):
                        item = _full_row(header, cells[:-1], line, end, max_field_chars, build)
                        if item is None:
                            continue  # a blank row
                    yield line, end, item
                return
            except (SlowPath, csv.Error):
                # The records read so far are the careful reader's; it reads the rest.
                resume_at = offset_after_lines(fh, start, end - first)
        yield from self._careful(resume_at, end)

    def _counted(self, pieces: Pieces) -> Iterator[str]:
        """The pieces' lines, counting their bytes into `end_offset` (csv.reader takes a record's
        lines and no more before it gives the record)."""
        for piece in pieces:
            if pieces.ascii:
                for text in piece:
                    self.end_offset += len(text)
                    yield text
            else:
                for text in piece:
                    self.end_offset += len(text.encode("utf-8"))
                    yield text

    def _careful(self, start_offset: int, start_line: int) -> Iterator[tuple[int, int, Y | RowError]]:
        """The careful reader's records from `start_offset` (after `start_line` lines), as `__iter__` gives them."""
        records = read_records(
            self.path,
            start_offset=start_offset,
            start_line=start_line,
            max_field_chars=self.max_field_chars,
            check_header=self.check_header,
            fmt="csv",
        )
        for record in records:
            if record.line not in self.skip_lines:
                self.end_offset = record.end_offset
                yield record.line, record.end_line, outcome(record, self.build)
