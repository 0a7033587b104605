"""Physical lines of an input file: decoded one at a time (the careful reader) or in large pieces
(the fast reader), with the same rules about what makes a line bad.

A line is split at line feeds only. A NUL byte, a byte order mark anywhere but at the very start,
invalid UTF-8 and a line over `MAX_LINE_BYTES` make a line bad: the careful reader reports it with
its line number and reads on; the fast reader raises `SlowPath` so that the careful reader takes
over (see `fast.py`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from notifyctl.errors import InputError

MAX_LINE_BYTES = 1 << 20
_FAST_PIECE_BYTES = 1 << 18  # what the fast reader decodes at a time

BOM = b"\xef\xbb\xbf"
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json-lines": "jsonl"}


@dataclass(slots=True)
class Line:
    """One physical line: its number, the byte offset just after it, and its text or why it is bad."""

    number: int
    end: int
    text: str | None
    error: str | None


class LineSource:
    """Decoded physical lines of a binary file; a bad line carries an error instead of text."""

    def __init__(self, fh: BinaryIO, offset: int, line: int) -> None:
        """`offset`: where `fh` is; `line`: how many physical lines come before it."""
        self.fh = fh
        self.offset = offset
        self.line = line

    def _read(self, limit: int) -> bytes:
        chunk = self.fh.readline(limit)
        self.offset += len(chunk)
        return chunk

    def __iter__(self) -> Iterator[Line]:
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
                yield Line(self.line, self.offset, None, f"line longer than 1 MiB ({MAX_LINE_BYTES} bytes)")
                continue
            text, error = _decode(raw, start)
            yield Line(self.line, self.offset, text, error)


def _decode(raw: bytes, start: int) -> tuple[str | None, str | None]:
    skip = 0
    if start == 0 and raw.startswith(BOM):
        skip = len(BOM)
    body = raw[skip:] if skip else raw
    if (nul := body.find(b"\x00")) >= 0:
        return None, f"NUL byte at byte offset {start + skip + nul}"
    if (bom := body.find(BOM)) >= 0:
        return None, f"byte order mark (BOM) at byte offset {start + skip + bom}; allowed only at the start of the file"
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 at byte offset {start + skip + exc.start}"


class SlowPath(Exception):
    """Something only the careful reader reports exactly: a NUL, a stray BOM, invalid UTF-8, an
    over-long line (malformed CSV raises csv.Error)."""


class Pieces:
    """The rest of a file in decoded pieces of whole lines, each iterating its lines split at line
    feeds only, as `LineSource` splits them; raises SlowPath where `LineSource` reports a bad line.
    `longest` is the longest line (in bytes) of the piece being read."""

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
                        raise SlowPath
                    continue
                piece, rest = rest + chunk[:cut], chunk[cut:]
            elif rest:
                piece, rest = rest, b""
            else:
                return
            if b"\x00" in piece or BOM in piece:
                raise SlowPath
            self.longest = max(map(len, piece.split(b"\n")))
            if self.longest > MAX_LINE_BYTES:
                raise SlowPath
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError:
                raise SlowPath from None
            self.ascii = piece.isascii()
            yield io.StringIO(text, newline="\n")


def open_binary(path: Path) -> BinaryIO:
    """`path` opened for reading bytes; InputError if it cannot be."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def count_lines(fh: BinaryIO, end: int) -> int:
    """Physical lines before byte `end` (for a resume that did not say where it is)."""
    fh.seek(0)
    lines, left = 0, end
    while left > 0 and (chunk := fh.read(min(left, 1 << 20))):
        lines += chunk.count(b"\n")
        left -= len(chunk)
    return lines


def offset_after_lines(fh: BinaryIO, offset: int, lines: int) -> int:
    """The byte offset just after `lines` more physical lines from `offset` (the end of the file if
    it has fewer): where a reader that counted lines, not bytes, stopped."""
    fh.seek(offset)
    while lines > 0 and (chunk := fh.read(1 << 20)):
        found = chunk.count(b"\n")
        if found < lines:
            lines -= found
            offset += len(chunk)
            continue
        at = -1
        for _ in range(lines):
            at = chunk.index(b"\n", at + 1)
        return offset + at + 1
    return offset


def detect_format(path: Path) -> str:
    """'csv' or 'jsonl', from the extension or else from the first non-blank byte."""
    known = _EXTENSIONS.get(path.suffix.lower())
    if known:
        return known
    with open_binary(path) as fh:
        head = fh.read(len(BOM))
        if not head.startswith(BOM):
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
