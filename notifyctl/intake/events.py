"""Event files for `notifyctl send --events`: one JSON object a line, each a logical event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from notifyctl.errors import InputError
from notifyctl.intake.fields import CONTROL, convert
from notifyctl.intake.lines import detect_format
from notifyctl.intake.records import Parsed, read_records
from notifyctl.models import CHANNELS


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
        if CONTROL.search(value):
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


def iter_events(
    path: Path, *, start_offset: int = 0, start_line: int = 0, max_field_chars: int = 4096
) -> Iterator[Parsed[Event]]:
    """Events (JSONL only), one per line; resumable like `iter_recipients`."""
    if detect_format(path) != "jsonl":
        raise InputError(f"{path}: events must be JSONL (one JSON object per line)")
    records = read_records(
        path, start_offset=start_offset, start_line=start_line, max_field_chars=max_field_chars, fmt="jsonl"
    )
    return convert(records, lambda fields, line: Event.model_validate(fields))
