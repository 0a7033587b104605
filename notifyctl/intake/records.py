"""The careful reader: CSV and JSONL records, one physical line at a time, with per-record errors.

A bad line or record becomes a `RowError` with its line number while the rest of the file is still
read, and memory does not grow with the file: every reader here is a generator. Each record
carries the byte offset just after it (`end_offset`) so a planner can resume reading there.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

from notifyctl.errors import InputError, RowError
from notifyctl.intake.lines import LineSource, count_lines, detect_format, open_binary

T = TypeVar("T")

MAX_JSON_DEPTH = 8


@dataclass
class Parsed(Generic[T]):
    """One record: a value or an error, where it starts, and the byte offset just after it.

    `end_line` is the last physical line of the record (multi-line quoted CSV fields); resume
    with `start_offset=end_offset, start_line=end_line`.
    """

    value: T | None
    error: RowError | None
    line: int
    end_offset: int
    end_line: int = 0

    def __post_init__(self) -> None:
        if self.end_line == 0:
            self.end_line = self.line


@dataclass(slots=True)
class Record:
    """One record's fields by name, or why it is rejected; where it starts and ends."""

    line: int
    end_line: int
    end_offset: int
    fields: dict[str, Any] | None
    error: RowError | None


# --- JSON -----------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


class _NotFinite(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate key {key[:80]!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not allowed (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotFinite(f"number {text[:40]} is out of range (Infinity is not allowed)")
    return number


def _depth(value: Any) -> int:
    """Nesting depth of containers (a flat object is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _too_long(value: Any, max_chars: int) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) > max_chars:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant, parse_float=_finite_float
        )
    except (_DuplicateKey, _NotFinite) as exc:
        return None, str(exc)
    except RecursionError:
        return None, f"nesting deeper than {MAX_JSON_DEPTH} levels"
    except ValueError as exc:
        return None, f"not valid JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"not a JSON object (found {type(value).__name__})"
    if _depth(value) > MAX_JSON_DEPTH:
        return None, f"nesting deeper than {MAX_JSON_DEPTH} levels"
    return value, None


def _jsonl_records(source: LineSource, max_field_chars: int) -> Iterator[Record]:
    for line in source:
        if line.text is None:
            yield Record(line.number, line.number, line.end, None, RowError(line.number, line.error or "bad line"))
            continue
        if not line.text.strip(" \t\r\n"):
            continue
        obj, reason = _json_object(line.text)
        if obj is None:
            yield Record(line.number, line.number, line.end, None, RowError(line.number, reason or "bad JSON"))
            continue
        long_key = next((key for key, value in obj.items() if _too_long([key, value], max_field_chars)), None)
        if long_key is not None:
            error = RowError(line.number, f"field longer than {max_field_chars} characters", long_key[:80])
            yield Record(line.number, line.number, line.end, None, error)
            continue
        yield Record(line.number, line.number, line.end, obj, None)


# --- CSV ------------------------------------------------------------------------------------


class CsvFeed:
    """Feeds decoded lines to csv.reader and remembers where the current record started."""

    def __init__(self, source: LineSource) -> None:
        self.source = source
        self.bad_line: str | None = None
        self.reader = csv.reader(self._texts(), strict=True)

    def _texts(self) -> Iterator[str]:
        for line in self.source:
            if line.text is None:
                self.bad_line = self.bad_line or line.error
                # A stand-in keeps csv's quote state consistent; the record is rejected anyway.
                yield "\n"
            else:
                yield line.text

    def next_row(self) -> tuple[int, list[str] | None, str | None] | None:
        """(start line, cells or None, error or None) of the next non-blank record; None at the end."""
        while True:
            start = self.source.line + 1
            self.bad_line = None
            try:
                cells = next(self.reader, None)
            except csv.Error as exc:
                return start, None, f"malformed CSV: {exc}"
            if self.bad_line is not None:
                return start, None, self.bad_line
            if cells is None:
                return None
            if any(cell.strip() for cell in cells):
                return start, cells, None


def csv_header(feed: CsvFeed, path: Path) -> list[str]:
    """The column names of the first record; InputError if there is none or it is not a header."""
    first = feed.next_row()
    if first is None:
        raise InputError(f"{path}: no header row")
    line, cells, error = first
    if cells is None:
        raise InputError(f"{path}: bad header row", [RowError(line, error or "bad header")])
    names = [cell.strip() for cell in cells]
    problems = [RowError(line, f"empty column name (column {i + 1})") for i, name in enumerate(names) if not name]
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            problems.append(RowError(line, f"duplicate column name {name[:80]!r}", name[:80]))
        seen.add(name)
    if problems:
        raise InputError(f"{path}: bad header row: {problems[0].reason}", problems)
    return names


def _csv_records(
    fh: BinaryIO,
    path: Path,
    *,
    start_offset: int,
    start_line: int,
    max_field_chars: int,
    check_header: Callable[[list[str]], None],
) -> Iterator[Record]:
    feed = CsvFeed(LineSource(fh, 0, 0))
    header = csv_header(feed, path)
    check_header(header)
    if start_offset > feed.source.offset:
        if not start_line:
            start_line = count_lines(fh, start_offset)
        fh.seek(start_offset)
        feed = CsvFeed(LineSource(fh, start_offset, start_line))
    while (row := feed.next_row()) is not None:
        line, cells, error = row
        end_line, end_offset = feed.source.line, feed.source.offset
        if cells is None:
            yield Record(line, end_line, end_offset, None, RowError(line, error or "bad row"))
        else:
            yield csv_record(header, cells, line, end_line, end_offset, max_field_chars)


def csv_record(
    header: list[str], cells: list[str], line: int, end_line: int, end_offset: int, max_field_chars: int
) -> Record:
    """A parsed CSV row (not blank) as a record: its fields by column name, or why it is rejected."""
    if len(cells) != len(header):
        reason = f"wrong number of fields: expected {len(header)} (as in the header), found {len(cells)}"
        return Record(line, end_line, end_offset, None, RowError(line, reason))
    if (long_at := next((i for i, cell in enumerate(cells) if len(cell) > max_field_chars), None)) is not None:
        error = RowError(line, f"field longer than {max_field_chars} characters", header[long_at][:80])
        return Record(line, end_line, end_offset, None, error)
    return Record(line, end_line, end_offset, dict(zip(header, cells, strict=True)), None)


def read_records(
    path: Path,
    *,
    start_offset: int = 0,
    start_line: int = 0,
    max_field_chars: int,
    check_header: Callable[[list[str]], None] = lambda names: None,
    fmt: str | None = None,
) -> Generator[Record, None, None]:
    """The records of a CSV or JSONL file from `start_offset` (after the CSV header, whose names
    `check_header` may refuse); `start_line` physical lines come before it (counted when 0)."""
    fmt = fmt or detect_format(path)
    with open_binary(path) as fh:
        if fmt == "csv":
            yield from _csv_records(
                fh,
                path,
                start_offset=start_offset,
                start_line=start_line,
                max_field_chars=max_field_chars,
                check_header=check_header,
            )
            return
        if start_offset and not start_line:
            start_line = count_lines(fh, start_offset)
        fh.seek(start_offset)
        yield from _jsonl_records(LineSource(fh, start_offset, start_line), max_field_chars)
