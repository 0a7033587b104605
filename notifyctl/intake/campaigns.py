"""Campaign files (TOML): what to send, to whom, on which channels, when."""

from __future__ import annotations

import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from notifyctl.errors import InputError
from notifyctl.models import CHANNELS


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    template: str
    category: str | None = None  # default: the template's category
    channels: list[str] | None = None  # default: the template's channels
    audience: Path | None = None
    send_at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str] | None) -> list[str] | None:
        for channel in value or []:
            if channel not in CHANNELS:
                raise ValueError(f"unknown channel '{channel}' (known: {', '.join(CHANNELS)})")
        return value

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("send_at needs a time zone, e.g. 2026-12-01T09:00:00Z")
        return value.astimezone(UTC) if value else None

    def audience_path(self) -> Path | None:
        if self.audience is None:
            return None
        if self.audience.is_absolute() or self.source is None:
            return self.audience
        return self.source.parent / self.audience


def load_campaign(path: Path) -> Campaign:
    """Read and validate a campaign file (`-`: standard input, its audience relative to the working
    directory); errors name the file and the key."""
    from_stdin = str(path) == "-"
    try:
        text = sys.stdin.read() if from_stdin else path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError as exc:
        raise InputError(f"campaign file not found: {path}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    try:
        campaign = Campaign.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(f"{path}: key '{key}': {first['msg'].removeprefix('Value error, ')}") from exc
    campaign.source = None if from_stdin else path
    return campaign
