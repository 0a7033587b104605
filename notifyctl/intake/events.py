"""NotificationRequested events: a line of `notifyctl send --events`, or a message of `notifyctl consume`.

One model for both front doors, with the seed's spellings: `user_id`/`userId`, `event_id`/`eventId`,
`data`/`payload` (giving both spellings of one field is an error).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from notifyctl.errors import InputError
from notifyctl.intake.fields import CONTROL, convert
from notifyctl.intake.lines import detect_format
from notifyctl.intake.records import Parsed, read_records
from notifyctl.models import CHANNELS


class Event(BaseModel):
    """One logical event for `notifyctl send --events`: who, which template, with what data."""

    model_config = ConfigDict(extra="forbid", strict=True)

    event_id: str = Field(validation_alias=AliasChoices("event_id", "eventId"))
    user_id: str = Field(validation_alias=AliasChoices("user_id", "userId"))
    template: str
    channels: list[str] | None = None
    data: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("data", "payload"))
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


def parse_event(raw: bytes | None) -> Event:
    """One event from a message's bytes (a JSON object); InputError says what is wrong with it."""
    if not raw:
        raise InputError("empty message: expected a JSON object")
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise InputError(f"expected a JSON object, got {type(fields).__name__}")
    try:
        return Event.model_validate(fields)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}" for err in exc.errors()]
        raise InputError("invalid event: " + "; ".join(problems)) from None
