"""What `notifyctl doctor` reports: one check's area, status and message."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    area: str  # "config", "database", "templates", "provider <name>", "runs"
    status: Status
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def ok(area: str, message: str) -> Check:
    return Check(area, "ok", message)


def warn(area: str, message: str) -> Check:
    return Check(area, "warn", message)


def fail(area: str, message: str) -> Check:
    return Check(area, "fail", message)


def failed(checks: list[Check]) -> bool:
    return any(check.status == "fail" for check in checks)
