"""Streaming audience, user and event files (CSV / JSONL) with per-row validation.

Files are read as bytes and decoded one physical line at a time, so a bad line becomes a
`RowError` with its line number while the rest of the file is still read, and memory does not
grow with the file: every reader here is a generator. Each record carries the byte offset just
after it (`end_offset`) so a planner can resume reading where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import operator
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Container, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar
from urllib.parse import urlsplit
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from notifyctl.addresses import AddressError, normalize_email, normalize_phone
from notifyctl.errors import InputError, RowError
from notifyctl.models import CHANNELS, Recipient, User, trusted

T = TypeVar("T")

MAX_LINE_BYTES = 1 << 20
MAX_JSON_DEPTH = 8
MAX_REPORTED_ERRORS = 1000
COLUMN_SAMPLE_OBJECTS = 1000

_BOM = b"\xef\xbb\xbf"
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json-lines": "jsonl"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LOCALE = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?")
_TOKEN_SPLIT = re.compile(r"[|;]")
_CONTACT_FIELDS = ("email", "phone", "push_tokens", "webhook_url")
_RECIPIENT_FIELDS = frozenset({"user_id", "email", "phone", "locale", "timezone", "push_tokens", "webhook_url"})
_USER_FIELDS = _RECIPIENT_FIELDS | {"webhook_secret"}
_DUPLICATE_BATCH = 10_000


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


class Event(BaseModel):
    """One logical event for `notifyctl send --events`: who, which template, with what data."""

    model_config = ConfigDict(extra="forbid", strict=True)

    event_id: str
    user_id: str
    template: str
    channels: list[str] | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    category: str | None = None

    @field_validator("event_id", "user_id", "template")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [channel for channel in value if channel not in CHANNELS]
        if unknown:
            raise ValueError(f"unknown channel {unknown[0]!r}; expected one of {', '.join(CHANNELS)}")
        return list(dict.fromkeys(value))


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


def csv_safe(value: str) -> str:
    """Neutralise a cell a spreadsheet would run as a formula (OWASP CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


# --- physical lines -------------------------------------------------------------------------


@dataclass(slots=True)
class _Line:
    number: int
    end: int
    text: str | None
    error: str | None


class _LineSource:
    """Decoded physical lines of a binary file; a bad line carries an error instead of text."""

    def __init__(self, fh: BinaryIO, offset: int, line: int) -> None:
        self.fh = fh
        self.offset = offset
        self.line = line

    def _read(self, limit: int) -> bytes:
        chunk = self.fh.readline(limit)
        self.offset += len(chunk)
        return chunk

    def __iter__(self) -> Iterator[_Line]:
        limit = MAX_LINE_BYTES + 2
        while True:
            start = self.offset
            raw = self._read(limit)
            if not raw:
                return
            content_bytes = len(raw) - raw.endswith(b"\n")
            if len(raw) == limit and not raw.endswith(b"\n"):
                # Skip the rest of an over-long line without holding it in memory.
                while (rest := self._read(1 << 16)) and not rest.endswith(b"\n"):
                    pass
            self.line += 1
            if content_bytes > MAX_LINE_BYTES:
                yield _Line(self.line, self.offset, None, f"line longer than 1 MiB ({MAX_LINE_BYTES} bytes)")
                continue
            text, error = _decode(raw, start)
            yield _Line(self.line, self.offset, text, error)


def _decode(raw: bytes, start: int) -> tuple[str | None, str | None]:
    skip = 0
    if start == 0 and raw.startswith(_BOM):
        skip = len(_BOM)
    body = raw[skip:] if skip else raw
    if (nul := body.find(b"\x00")) >= 0:
        return None, f"NUL byte at byte offset {start + skip + nul}"
    if (bom := body.find(_BOM)) >= 0:
        return None, f"byte order mark (BOM) at byte offset {start + skip + bom}; allowed only at the start of the file"
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 at byte offset {start + skip + exc.start}"


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _count_lines(fh: BinaryIO, end: int) -> int:
    """Physical lines before byte `end` (for a resume that did not say where it is)."""
    fh.seek(0)
    lines, left = 0, end
    while left > 0 and (chunk := fh.read(min(left, 1 << 20))):
        lines += chunk.count(b"\n")
        left -= len(chunk)
    return lines


def detect_format(path: Path) -> str:
    """'csv' or 'jsonl', from the extension or else from the first non-blank byte."""
    known = _EXTENSIONS.get(path.suffix.lower())
    if known:
        return known
    with _open(path) as fh:
        head = fh.read(len(_BOM))
        if not head.startswith(_BOM):
            fh.seek(0)
        while chunk := fh.read(1 << 16):
            stripped = chunk.lstrip(b" \t\r\n")
            if not stripped:
                continue
            first = stripped[:1]
            if first == b"{":
                return "jsonl"
            if first == b"[":
                raise InputError(f"{path}: a JSON array is not supported; write one JSON object per line (JSONL)")
            if first[0] < 0x20 or first[0] == 0x7F:
                raise InputError(f"{path}: unknown format (binary data); expected CSV or JSONL")
            return "csv"
    raise InputError(f"{path}: the file is empty; cannot tell CSV from JSONL")


# --- records --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    line: int
    end_line: int
    end_offset: int
    fields: dict[str, Any] | None
    error: RowError | None


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


def _jsonl_records(source: _LineSource, max_field_chars: int) -> Iterator[_Record]:
    for line in source:
        if line.text is None:
            yield _Record(line.number, line.number, line.end, None, RowError(line.number, line.error or "bad line"))
            continue
        if not line.text.strip(" \t\r\n"):
            continue
        obj, reason = _json_object(line.text)
        if obj is None:
            yield _Record(line.number, line.number, line.end, None, RowError(line.number, reason or "bad JSON"))
            continue
        long_key = next((key for key, value in obj.items() if _too_long([key, value], max_field_chars)), None)
        if long_key is not None:
            error = RowError(line.number, f"field longer than {max_field_chars} characters", long_key[:80])
            yield _Record(line.number, line.number, line.end, None, error)
            continue
        yield _Record(line.number, line.number, line.end, obj, None)


class _CsvFeed:
    """Feeds decoded lines to csv.reader and remembers where the current record started."""

    def __init__(self, source: _LineSource) -> None:
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


def _csv_header(feed: _CsvFeed, path: Path) -> list[str]:
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
) -> Iterator[_Record]:
    feed = _CsvFeed(_LineSource(fh, 0, 0))
    header = _csv_header(feed, path)
    check_header(header)
    if start_offset > feed.source.offset:
        if not start_line:
            start_line = _count_lines(fh, start_offset)
        fh.seek(start_offset)
        feed = _CsvFeed(_LineSource(fh, start_offset, start_line))
    while (row := feed.next_row()) is not None:
        line, cells, error = row
        end_line, end_offset = feed.source.line, feed.source.offset
        if cells is None:
            yield _Record(line, end_line, end_offset, None, RowError(line, error or "bad row"))
        else:
            yield _csv_record(header, cells, line, end_line, end_offset, max_field_chars)


def _csv_record(
    header: list[str], cells: list[str], line: int, end_line: int, end_offset: int, max_field_chars: int
) -> _Record:
    """A parsed CSV row (not blank) as a record: its fields by column name, or why it is rejected."""
    if len(cells) != len(header):
        reason = f"wrong number of fields: expected {len(header)} (as in the header), found {len(cells)}"
        return _Record(line, end_line, end_offset, None, RowError(line, reason))
    if (long_at := next((i for i, cell in enumerate(cells) if len(cell) > max_field_chars), None)) is not None:
        error = RowError(line, f"field longer than {max_field_chars} characters", header[long_at][:80])
        return _Record(line, end_line, end_offset, None, error)
    return _Record(line, end_line, end_offset, dict(zip(header, cells, strict=True)), None)


def _records(
    path: Path,
    *,
    start_offset: int = 0,
    start_line: int = 0,
    max_field_chars: int,
    check_header: Callable[[list[str]], None] = lambda names: None,
    fmt: str | None = None,
) -> Generator[_Record, None, None]:
    fmt = fmt or detect_format(path)
    with _open(path) as fh:
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
            start_line = _count_lines(fh, start_offset)
        fh.seek(start_offset)
        yield from _jsonl_records(_LineSource(fh, start_offset, start_line), max_field_chars)


# --- fields ---------------------------------------------------------------------------------


class _FieldError(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        self.field_name = field_name
        self.reason = reason
        super().__init__(reason)


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _FieldError(name, f"{name} must be a string")
    return value.strip() or None


def _identifier(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text({name: value}, name)
    if text is not None and _CONTROL.search(text):
        raise _FieldError(name, f"{name} must not contain control characters")
    return text


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


@lru_cache(maxsize=4096)
def _locale(value: str) -> str:
    """Cached: a million rows carry a handful of distinct locales (errors are not cached)."""
    match = _LOCALE.fullmatch(value)
    if match is None:
        raise _FieldError("locale", "locale must look like 'en', 'fr-CA' or 'pt_BR'")
    language, script, region = match.groups()
    parts = [language.lower(), script.title() if script else None, region.upper() if region else None]
    return "-".join(part for part in parts if part)


def _push_tokens(value: Any, *, from_csv: bool) -> list[str]:
    if value is None or value == "":
        return []
    if from_csv and isinstance(value, str):
        tokens = _TOKEN_SPLIT.split(value)
    elif isinstance(value, list) and all(isinstance(token, str) for token in value):
        tokens = value
    else:
        raise _FieldError("push_tokens", "push_tokens must be a list of strings")
    cleaned = [token.strip() for token in tokens if token.strip()]
    if any(_CONTROL.search(token) or " " in token for token in cleaned):
        raise _FieldError("push_tokens", "a push token must not contain spaces or control characters")
    return list(dict.fromkeys(cleaned))


@lru_cache(maxsize=4096)
def _webhook_url(value: str) -> str:
    """Cached: many users often share one endpoint URL (errors are not cached)."""
    if _CONTROL.search(value) or " " in value:
        raise _FieldError("webhook_url", "webhook_url must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise _FieldError("webhook_url", f"webhook_url is not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _FieldError("webhook_url", "webhook_url must be an http(s) URL with a host")
    return value


def _contact(fields: Mapping[str, Any], *, from_csv: bool, default_region: str | None) -> dict[str, Any]:
    """The validated, normalised contact fields of a row; raises _FieldError."""
    contact: dict[str, Any] = {"user_id": _identifier(fields, "user_id")}
    if (email := _text(fields, "email")) is not None:
        try:
            contact["email"] = normalize_email(email)
        except AddressError as exc:
            raise _FieldError("email", str(exc)) from exc
    if (phone := _text(fields, "phone")) is not None:
        try:
            contact["phone"] = normalize_phone(phone, default_region)
        except AddressError as exc:
            raise _FieldError("phone", str(exc)) from exc
    if (locale := _text(fields, "locale")) is not None:
        contact["locale"] = _locale(locale)
    if (timezone := _text(fields, "timezone")) is not None:
        if timezone not in _zones():
            raise _FieldError("timezone", "timezone is not a known IANA time zone (like Europe/Paris)")
        contact["timezone"] = timezone
    contact["push_tokens"] = _push_tokens(fields.get("push_tokens"), from_csv=from_csv)
    if (url := _text(fields, "webhook_url")) is not None:
        contact["webhook_url"] = _webhook_url(url)
    return contact


def _extra(fields: Mapping[str, Any], known: frozenset[str], nested: str, *, from_csv: bool) -> dict[str, Any]:
    """Columns that are not contact fields; in JSONL an object under `nested` is merged in first."""
    extra: dict[str, Any] = {}
    if not from_csv and nested in fields:
        if not isinstance(fields[nested], dict):
            raise _FieldError(nested, f"{nested} must be a JSON object")
        extra.update(fields[nested])
    extra.update((key, value) for key, value in fields.items() if key not in known and (from_csv or key != nested))
    return extra


def _parse(record: _Record, build: Callable[[Mapping[str, Any], int], T]) -> Parsed[T]:
    if record.fields is None:
        return Parsed(None, record.error, record.line, record.end_offset, record.end_line)
    try:
        value = build(record.fields, record.line)
    except _FieldError as exc:
        error = RowError(record.line, exc.reason, exc.field_name)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]) if first["loc"] else None
        error = RowError(record.line, f"{where or 'row'}: {first['msg']}", where)
    else:
        return Parsed(value, None, record.line, record.end_offset, record.end_line)
    return Parsed(None, error, record.line, record.end_offset, record.end_line)


def _convert(
    records: Iterable[_Record], build: Callable[[Mapping[str, Any], int], T], skip_lines: Container[int] = ()
) -> Iterator[Parsed[T]]:
    for record in records:
        if record.line not in skip_lines:
            yield _parse(record, build)


# --- users, recipients, events --------------------------------------------------------------


def _require_columns(
    path: Path, *, all_of: tuple[str, ...] = (), any_of: tuple[str, ...] = ()
) -> Callable[[list[str]], None]:
    def check(names: list[str]) -> None:
        missing = [name for name in all_of if name not in names]
        if missing:
            raise InputError(f"{path}: missing required column(s): {', '.join(missing)}")
        if any_of and not any(name in names for name in any_of):
            raise InputError(f"{path}: needs at least one of the columns {', '.join(any_of)}")

    return check


def _user_builder(from_csv: bool, default_region: str | None) -> Callable[[Mapping[str, Any], int], User]:
    def build(fields: Mapping[str, Any], line: int) -> User:
        contact = _contact(fields, from_csv=from_csv, default_region=default_region)
        if contact["user_id"] is None:
            raise _FieldError("user_id", "missing user_id")
        secret = _text(fields, "webhook_secret")
        if secret is not None and not _good_secret(secret):
            raise _FieldError("webhook_secret", "webhook_secret must start with 'whsec_' (Standard Webhooks)")
        attributes = _extra(fields, _USER_FIELDS, "attributes", from_csv=from_csv)
        return User(**contact, webhook_secret=secret, attributes=attributes)

    return build


def _good_secret(secret: str) -> bool:
    return secret.startswith("whsec_") and len(secret) > len("whsec_")


def iter_users(path: Path, *, max_field_chars: int = 4096, default_region: str | None = None) -> Iterator[Parsed[User]]:
    """Users to import: user_id required; unknown columns become attributes."""
    fmt = detect_format(path)
    check = _require_columns(path, all_of=("user_id",))
    records = _records(path, max_field_chars=max_field_chars, check_header=check, fmt=fmt)
    return _convert(records, _user_builder(fmt == "csv", default_region))


# --- users, fast path -----------------------------------------------------------------------

UserFields = tuple[
    str, str | None, str | None, str | None, str | None, list[str], str | None, str | None, dict[str, Any]
]
"""A valid user's fields in `User` order: user_id, email, phone, locale, timezone, push_tokens,
webhook_url, webhook_secret, attributes."""

_FAST_PIECE_BYTES = 1 << 18
_USER_COLUMNS = ("user_id", "email", "phone", "locale", "timezone", "push_tokens", "webhook_url", "webhook_secret")


class _SlowPath(Exception):
    """Something only the line-by-line reader reports exactly: a NUL, a stray BOM, invalid
    UTF-8, an over-long line (malformed CSV raises csv.Error)."""


class _Unusual(Exception):
    """A row the fast checks do not accept as it is: the full builder decides (and words the error)."""


def user_fields(user: User) -> UserFields:
    return (
        user.user_id,
        user.email,
        user.phone,
        user.locale,
        user.timezone,
        user.push_tokens,
        user.webhook_url,
        user.webhook_secret,
        user.attributes,
    )


def iter_user_fields(
    path: Path, *, max_field_chars: int = 4096, default_region: str | None = None
) -> Iterator[UserFields | RowError]:
    """Exactly what `iter_users` reads, in the same order, several times faster on CSV: each valid
    user's fields (a plain tuple, no model) or the row's error.

    A CSV file is read in large decoded pieces straight into csv.reader; a row whose cells pass
    cheap checks is converted in place, any other goes through the builder `iter_users` uses.
    Should the file hold something only the line-by-line reader reports (a NUL, a stray BOM,
    invalid UTF-8, an over-long line, malformed CSV), that reader takes over from the first record
    not given yet. JSONL is read by `iter_users`.
    """
    given = 0  # start line of the last record given
    if detect_format(path) == "csv":
        try:
            for line, item in _fast_csv_users(path, max_field_chars, default_region):
                given = line
                yield item
            return
        except (_SlowPath, csv.Error):
            pass
    for parsed in iter_users(path, max_field_chars=max_field_chars, default_region=default_region):
        if parsed.line > given:
            if parsed.value is not None:
                yield user_fields(parsed.value)
            else:
                yield parsed.error or RowError(parsed.line, "bad row")


class _Pieces:
    """The rest of a file in decoded pieces of whole lines, each iterating its lines split at line
    feeds only, as `_LineSource` splits them; raises _SlowPath where `_LineSource` reports a bad
    line. `longest` is the longest line (in bytes) of the piece being read."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.longest = 0
        self.ascii = True  # the piece being read: its lines' lengths are their byte lengths

    def __iter__(self) -> Iterator[io.StringIO]:
        rest = b""
        while True:
            chunk = self.fh.read(_FAST_PIECE_BYTES)
            if chunk:
                cut = chunk.rfind(b"\n") + 1
                if not cut:
                    rest += chunk
                    if len(rest) > MAX_LINE_BYTES:
                        raise _SlowPath
                    continue
                piece, rest = rest + chunk[:cut], chunk[cut:]
            elif rest:
                piece, rest = rest, b""
            else:
                return
            if b"\x00" in piece or _BOM in piece:
                raise _SlowPath
            self.longest = max(map(len, piece.split(b"\n")))
            if self.longest > MAX_LINE_BYTES:
                raise _SlowPath
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError:
                raise _SlowPath from None
            self.ascii = piece.isascii()
            yield io.StringIO(text, newline="\n")


# A valid row's contact cells, normalised: user_id, email, phone, locale, timezone, push_tokens,
# webhook_url, webhook_secret (None where empty).
_ContactCells = tuple[str | None, str | None, str | None, str | None, str | None, list[str], str | None, str | None]


class _FastCsv:
    """A CSV file read as `_fast_csv_users` and `_fast_csv_outcomes` read it: the header as every
    reader reads it (its errors too), then the records from large pieces, each with "" appended (an
    absent column reads that cell: the same as an empty one). Raises _SlowPath or csv.Error."""

    def __init__(
        self,
        fh: BinaryIO,
        path: Path,
        check_header: Callable[[list[str]], None],
        start_offset: int = 0,
        start_line: int = 0,
    ) -> None:
        """`start_offset`, `start_line`: read the records from there (as `_csv_records` does)."""
        feed = _CsvFeed(_LineSource(fh, 0, 0))
        self.header = _csv_header(feed, path)
        check_header(self.header)
        at = {name: i for i, name in enumerate(self.header)}
        self.at = tuple(at.get(name, len(self.header)) for name in _USER_COLUMNS)
        self._first, self.end_offset = feed.source.line, feed.source.offset
        if start_offset > self.end_offset:
            self._first = start_line or _count_lines(fh, start_offset)
            self.end_offset = start_offset
        fh.seek(self.end_offset)
        self._fh = fh

    def records(self, max_field_chars: int, track_offset: bool = False) -> Iterator[tuple[int, int, list[str], bool]]:
        """(start line, end line, cells + [""], whether the record has the header's shape and no
        over-long cell: if not, only the full builder may word its error). With `track_offset`,
        `self.end_offset` is the byte offset just after each record as it is given."""
        columns = len(self.header)
        first = end = self._first
        pieces = _Pieces(self._fh)
        lines = self._counted(pieces) if track_offset else itertools.chain.from_iterable(pieces)
        reader = csv.reader(lines, strict=True)
        for cells in reader:
            line, end = end + 1, first + reader.line_num
            cells.append("")
            # No cell is longer than the record's line; a record of several lines is measured.
            shaped = len(cells) == columns + 1 and not (
                (pieces.longest > max_field_chars or end != line) and max(map(len, cells)) > max_field_chars
            )
            yield line, end, cells, shaped

    def _counted(self, pieces: _Pieces) -> Iterator[str]:
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

    def recipient(self, cells: list[str], zones: frozenset[str], default_region: str | None) -> _ContactCells:
        """`contact` for an audience row, which raises _Unusual also for a webhook_secret (refused in
        audience files) and for a row with no way to reach anyone: the builder words both."""
        contact = self.contact(cells, zones, default_region)
        user_id, email, phone, _, _, push_tokens, url, secret = contact
        if secret is not None or not (user_id or email or phone or push_tokens or url):
            raise _Unusual
        return contact

    def contact(self, cells: list[str], zones: frozenset[str], default_region: str | None) -> _ContactCells:
        """The contact cells of a record, checked and normalised as `_contact` does; raises _Unusual,
        _FieldError or AddressError where the full builder must decide (and word the error)."""
        i_user, i_email, i_phone, i_locale, i_timezone, i_tokens, i_url, i_secret = self.at
        user_id = cells[i_user].strip() or None
        if user_id is not None and not user_id.isprintable():  # isprintable: no control characters
            raise _Unusual
        email: str | None = cells[i_email].strip() or None
        if email is not None:
            email = normalize_email(email)
        phone: str | None = cells[i_phone].strip() or None
        if phone is not None:
            phone = normalize_phone(phone, default_region)
        locale: str | None = cells[i_locale].strip() or None
        if locale is not None:
            locale = _locale(locale)
        timezone = cells[i_timezone].strip() or None
        if timezone is not None and timezone not in zones:
            raise _Unusual
        tokens = cells[i_tokens]
        push_tokens = _push_tokens(tokens, from_csv=True) if tokens else []
        url: str | None = cells[i_url].strip() or None
        if url is not None:
            url = _webhook_url(url)
        secret = cells[i_secret].strip() or None
        return user_id, email, phone, locale, timezone, push_tokens, url, secret


def _fast_csv_users(
    path: Path, max_field_chars: int, default_region: str | None
) -> Iterator[tuple[int, UserFields | RowError]]:
    """(start line, fields or error) of each CSV record; raises _SlowPath or csv.Error (see above)."""
    build = _user_builder(True, default_region)
    zones = _zones()
    with _open(path) as fh:
        csv_file = _FastCsv(fh, path, _require_columns(path, all_of=("user_id",)))
        header = csv_file.header
        attributes_of = _attributes_getter([(name, i) for i, name in enumerate(header) if name not in _USER_FIELDS])
        for line, end, cells, shaped in csv_file.records(max_field_chars):
            item: UserFields | RowError | None
            try:
                if not shaped:
                    raise _Unusual
                user_id, email, phone, locale, timezone, push_tokens, url, secret = csv_file.contact(
                    cells, zones, default_region
                )
                if user_id is None:
                    raise _Unusual
                if secret is not None and not (secret.startswith("whsec_") and len(secret) > 6):  # _good_secret
                    raise _Unusual
                item = (user_id, email, phone, locale, timezone, push_tokens, url, secret, attributes_of(cells))
            except (_Unusual, _FieldError, AddressError):
                user = _full_row(header, cells[:-1], line, end, max_field_chars, build)
                if user is None:
                    continue
                item = user if isinstance(user, RowError) else user_fields(user)
            yield line, item


def _attributes_getter(extras: list[tuple[str, int]]) -> Callable[[list[str]], dict[str, Any]]:
    """What `_extra` makes of a CSV row's cells: the other columns, by name, in header order."""
    if not extras:
        return lambda cells: {}
    if len(extras) == 1:
        ((name, i),) = extras
        return lambda cells: {name: cells[i]}
    names = [name for name, _i in extras]
    values = operator.itemgetter(*(i for _name, i in extras))
    return lambda cells: dict(zip(names, values(cells), strict=True))


def _full_row(
    header: list[str],
    cells: list[str],
    line: int,
    end_line: int,
    max_field_chars: int,
    build: Callable[[Mapping[str, Any], int], T],
) -> T | RowError | None:
    """One CSV row through the full builder, as the line-by-line readers read it: its value, its
    error, or None for a blank row (skipped)."""
    if not any(cell.strip() for cell in cells):
        return None
    parsed = _parse(_csv_record(header, cells, line, end_line, 0, max_field_chars), build)
    if parsed.value is not None:
        return parsed.value
    return parsed.error or RowError(line, "bad row")


def _recipient_builder(from_csv: bool, default_region: str | None) -> Callable[[Mapping[str, Any], int], Recipient]:
    def build(fields: Mapping[str, Any], line: int) -> Recipient:
        if _text(fields, "webhook_secret") is not None:
            # Recipient has no place for it, and a secret must never reach template data.
            raise _FieldError("webhook_secret", "webhook_secret is not accepted in audience files; import users")
        contact = _contact(fields, from_csv=from_csv, default_region=default_region)
        if not contact["user_id"] and not any(contact.get(name) for name in _CONTACT_FIELDS):
            raise _FieldError("user_id", "no user_id and no contact field (email, phone, push_tokens, webhook_url)")
        data = _extra(fields, _RECIPIENT_FIELDS | {"webhook_secret"}, "data", from_csv=from_csv)
        return Recipient(line=line, **contact, data=data)

    return build


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

    CSV is read as `iter_user_fields` reads it, in large pieces with cheap checks per row, and
    gives the same rows, errors and offsets as the line-by-line reader; should the file hold
    something only that reader reports exactly, it takes over after the last row given.
    """
    fmt = detect_format(path)
    check = _require_columns(path, any_of=("user_id", *_CONTACT_FIELDS))
    if fmt == "csv":
        try:
            for parsed in _fast_csv_recipients(
                path, start_offset, start_line, max_field_chars, skip_lines, default_region, check
            ):
                start_offset, start_line = parsed.end_offset, parsed.end_line
                yield parsed
            return
        except (_SlowPath, csv.Error):
            pass
    records = _records(
        path,
        start_offset=start_offset,
        start_line=start_line,
        max_field_chars=max_field_chars,
        check_header=check,
        fmt=fmt,
    )
    yield from _convert(records, _recipient_builder(fmt == "csv", default_region), skip_lines)


def _fast_csv_recipients(
    path: Path,
    start_offset: int,
    start_line: int,
    max_field_chars: int,
    skip_lines: Container[int],
    default_region: str | None,
    check_header: Callable[[list[str]], None],
) -> Iterator[Parsed[Recipient]]:
    """Each CSV record's recipient or error with its end offset; raises _SlowPath or csv.Error."""
    build = _recipient_builder(True, default_region)
    zones = _zones()
    with _open(path) as fh:
        csv_file = _FastCsv(fh, path, check_header, start_offset, start_line)
        header = csv_file.header
        known = _RECIPIENT_FIELDS | {"webhook_secret"}
        data_of = _attributes_getter([(name, i) for i, name in enumerate(header) if name not in known])
        for line, end, cells, shaped in csv_file.records(max_field_chars, track_offset=True):
            if line in skip_lines:
                continue
            value: Recipient | RowError | None
            try:
                if not shaped:
                    raise _Unusual
                user_id, email, phone, locale, timezone, push_tokens, url, _ = csv_file.recipient(
                    cells, zones, default_region
                )
                value = trusted(
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
            except (_Unusual, _FieldError, AddressError):
                value = _full_row(header, cells[:-1], line, end, max_field_chars, build)
                if value is None:
                    continue  # a blank row
            if isinstance(value, RowError):
                yield Parsed(None, value, line, csv_file.end_offset, end)
            else:
                yield Parsed(value, None, line, csv_file.end_offset, end)


def iter_events(
    path: Path, *, start_offset: int = 0, start_line: int = 0, max_field_chars: int = 4096
) -> Iterator[Parsed[Event]]:
    """Events (JSONL only), one per line; resumable like `iter_recipients`."""
    if detect_format(path) != "jsonl":
        raise InputError(f"{path}: events must be JSONL (one JSON object per line)")
    records = _records(
        path, start_offset=start_offset, start_line=start_line, max_field_chars=max_field_chars, fmt="jsonl"
    )
    return _convert(records, lambda fields, line: Event.model_validate(fields))


def audience_columns(path: Path) -> set[str]:
    """CSV header names, or the union of keys of the first 1000 JSONL objects (a `data` object's keys included)."""
    fmt = detect_format(path)
    columns: set[str] = set()
    if fmt == "csv":
        with _open(path) as fh:
            return set(_csv_header(_CsvFeed(_LineSource(fh, 0, 0)), path))
    objects = 0
    records = _records(path, max_field_chars=MAX_LINE_BYTES, fmt=fmt)
    try:
        for record in records:
            if record.fields is not None:
                _add_columns(columns, record.fields)
                objects += 1
                if objects >= COLUMN_SAMPLE_OBJECTS:
                    break
    finally:
        records.close()
    return columns


def _add_columns(columns: set[str], fields: Mapping[str, Any]) -> None:
    columns.update(fields)
    if isinstance(fields.get("data"), dict):
        columns.discard("data")
        columns.update(fields["data"])


def _dedupe_key(recipient: Recipient) -> bytes:
    return _dedupe_identity(
        recipient.user_id, recipient.email, recipient.phone, recipient.push_tokens, recipient.webhook_url
    )


def _dedupe_identity(
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


class _DuplicateFinder:
    """Identities spilled to a temporary SQLite file, so 1M rows do not live in a Python set."""

    def __init__(self, directory: str) -> None:
        self.conn = sqlite3.connect(Path(directory) / "identities.sqlite")
        self.conn.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;"
            "CREATE TABLE identities (identity BLOB NOT NULL, line INTEGER NOT NULL);"
        )
        self.batch: list[tuple[bytes, int]] = []

    def add(self, identity: bytes, line: int) -> None:
        self.batch.append((identity, line))
        if len(self.batch) >= _DUPLICATE_BATCH:
            self.flush()

    def flush(self) -> None:
        with self.conn:
            self.conn.executemany("INSERT INTO identities VALUES (?, ?)", self.batch)
        self.batch.clear()

    def duplicates(self) -> Iterator[tuple[int, int]]:
        """(line, first line) of every repeated identity, in line order."""
        self.flush()
        yield from self.conn.execute(
            """SELECT i.line, f.first_line FROM identities AS i
               JOIN (SELECT identity, MIN(line) AS first_line FROM identities
                     GROUP BY identity HAVING COUNT(*) > 1) AS f ON i.identity = f.identity
               WHERE i.line > f.first_line ORDER BY i.line"""
        )

    def close(self) -> None:
        self.conn.close()


# Each row of an audience, as validation sees it: its line and either its error or, for a valid
# row, its recipient's dedupe key.
_Outcome = tuple[int, "RowError | bytes"]


def validate_audience(
    path: Path, *, max_field_chars: int = 4096, default_region: str | None = None
) -> ValidationReport:
    """Parse every row in one streaming pass: errors, columns, sha256 and duplicate recipients.

    A CSV file goes through the fast path (large pieces into csv.reader, cheap checks per row, the
    full builder only for rows that fail them, so every error is worded and placed as by
    `iter_recipients`); a file that holds something only the line-by-line reader reports (a NUL,
    a stray BOM, invalid UTF-8, an over-long line, malformed CSV) is read again that way."""
    fmt = detect_format(path)
    if fmt == "csv":
        header: list[str] = []
        try:
            return _tally(_fast_csv_outcomes(path, max_field_chars, default_region, header), path, set(), header)
        except (_SlowPath, csv.Error):
            pass
    return _validate_line_by_line(path, fmt, max_field_chars, default_region)


def _validate_line_by_line(path: Path, fmt: str, max_field_chars: int, default_region: str | None) -> ValidationReport:
    """`validate_audience` through `iter_recipients`' reader, record by record (JSONL, odd CSV)."""
    build = _recipient_builder(fmt == "csv", default_region)
    header: list[str] = []
    columns: set[str] = set()

    def check(names: list[str]) -> None:
        _require_columns(path, any_of=("user_id", *_CONTACT_FIELDS))(names)
        header.extend(names)

    def outcomes() -> Iterator[_Outcome]:
        sampled = 0
        for record in _records(path, max_field_chars=max_field_chars, check_header=check, fmt=fmt):
            if fmt == "jsonl" and record.fields is not None and sampled < COLUMN_SAMPLE_OBJECTS:
                _add_columns(columns, record.fields)
                sampled += 1
            parsed = _parse(record, build)
            if parsed.value is None:
                yield record.line, parsed.error or RowError(record.line, "bad row")
            else:
                yield parsed.line, _dedupe_key(parsed.value)

    return _tally(outcomes(), path, columns, header)


def _tally(
    outcomes: Iterator[_Outcome], path: Path, columns: set[str], header: list[str] | None = None
) -> ValidationReport:
    """Count the rows' outcomes into a report; duplicates are found in a temporary SQLite file.
    `header`: a CSV header read while the outcomes are (its names are the columns)."""
    rows = valid = error_count = 0
    errors: list[RowError] = []
    with tempfile.TemporaryDirectory(prefix="notifyctl-audience-") as scratch:
        finder = _DuplicateFinder(scratch)
        try:
            for line, outcome in outcomes:
                rows += 1
                if isinstance(outcome, RowError):
                    error_count += 1
                    if len(errors) < MAX_REPORTED_ERRORS:
                        errors.append(outcome)
                    continue
                valid += 1
                finder.add(outcome, line)
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
        columns=set(header) if header else columns,
        sha256=_file_sha256(path),
        duplicates=len(duplicate_lines),
        duplicate_lines=duplicate_lines,
    )


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with _open(path) as fh:
        while chunk := fh.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _fast_csv_outcomes(
    path: Path, max_field_chars: int, default_region: str | None, header_out: list[str]
) -> Iterator[_Outcome]:
    """The outcome of each CSV record, read as `_fast_csv_users` reads users; raises _SlowPath or
    csv.Error where the line-by-line reader must take over. The header goes to `header_out`."""
    build = _recipient_builder(True, default_region)
    zones = _zones()
    with _open(path) as fh:
        csv_file = _FastCsv(fh, path, _require_columns(path, any_of=("user_id", *_CONTACT_FIELDS)))
        header_out.extend(csv_file.header)
        for line, end, cells, shaped in csv_file.records(max_field_chars):
            outcome: RowError | bytes | None
            try:
                if not shaped:
                    raise _Unusual
                user_id, email, phone, _, _, push_tokens, url, _ = csv_file.recipient(cells, zones, default_region)
                outcome = _dedupe_identity(user_id, email, phone, push_tokens, url)
            except (_Unusual, _FieldError, AddressError):
                recipient = _full_row(csv_file.header, cells[:-1], line, end, max_field_chars, build)
                if recipient is None:
                    continue
                outcome = recipient if isinstance(recipient, RowError) else _dedupe_key(recipient)
            yield line, outcome


def spool_stdin(stream: BinaryIO, directory: Path | None = None) -> Path:
    """Copy a stream to a private temporary file (the caller deletes it) so it can be read twice."""
    with tempfile.NamedTemporaryFile(
        "wb", prefix="notifyctl-stdin-", suffix=".input", dir=directory, delete=False
    ) as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
    return Path(spool.name)
