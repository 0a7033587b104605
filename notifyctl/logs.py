"""Structured logs that carry an allowlist of fields, never an address in clear, never a secret.

Code logs through `logging.getLogger("notifyctl…")` with structured fields in `extra=`:

    log.info("delivery sent", extra={"event": "sent", "delivery_id": 12, "latency_ms": 80.5})

The JSON formatter writes only the fields in ALLOWED_FIELDS (anything else passed in `extra` is
dropped, so a careless `extra={"envelope": ...}` cannot leak a message body or an address), and
every text it writes — the message, the exception, each string field — goes through
`redact_secrets` with the configured secret values. Crash reports use the same scrubbing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from notifyctl.security.redaction import mask_address, redact_secrets
from notifyctl.states import DeliveryState

LOGGER_NAME = "notifyctl"
ALLOWED_FIELDS: tuple[str, ...] = (
    "ts", "level", "event", "run_id", "delivery_id", "channel", "provider", "state", "reason", "code",
    "attempt", "latency_ms", "count", "address_masked", "user_id_hash",
    # a run's lines (pipeline/runlog.py): outcome classes, error classes, timings and counts only
    "kind", "shard", "outcome", "error_class", "retry_in_s", "elapsed_s", "sent_this_session", "resent", "held",
    *(f"count_{state}" for state in DeliveryState),
)  # fmt: skip
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_HANDLER_MARK = "_notifyctl_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the allowlisted fields, a redacted message and exception."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact_secrets(value, self.secrets)
        if isinstance(value, bool | int | float) or value is None:
            return value
        return redact_secrets(str(value), self.secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        for name in ALLOWED_FIELDS[2:]:
            if name in record.__dict__:
                entry[name] = self._clean(record.__dict__[name])
        entry["message"] = redact_secrets(record.getMessage(), self.secrets)
        if record.exc_info:
            entry["exception"] = redact_secrets(self.formatException(record.exc_info), self.secrets)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, path: Path | None, secrets: list[str]) -> None:
    """Send the `notifyctl` loggers to `path` (appended, mode 0600) or stderr as JSON lines.

    Calling it again replaces the handler it installed before (tests, `serve` reloads).
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level '{level}' (known: {', '.join(LEVELS)})")
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        if getattr(old, _HANDLER_MARK, False):
            logger.removeHandler(old)
            old.close()
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created private before the handler opens it: logs name runs, users (hashed) and errors.
        os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
        handler = logging.FileHandler(path, encoding="utf-8")
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter(secrets))
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level.lower()])
    logger.propagate = False


def destination() -> tuple[str, Path | None] | None:
    """Where `configure_logging` sends the logs now (level, file or None for stderr), or None when
    it was not called: what a process started for the same run (a sender process) is given."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in logger.handlers:
        if getattr(handler, _HANDLER_MARK, False):
            level = logging.getLevelName(logger.level).lower()
            return level, Path(handler.baseFilename) if isinstance(handler, logging.FileHandler) else None
    return None


def address_field(address: str | None) -> dict[str, str]:
    """`extra` fields for an address: masked, never in clear."""
    return {"address_masked": mask_address(address)} if address else {}


def user_id_hash(user_id: str, key: bytes) -> str:
    """A keyed hash of a user id, so log lines about one user can be correlated without naming them."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:16]


def crash_report(exc: BaseException, secrets: list[str]) -> str:
    """The traceback of an unexpected error, with every secret shape and configured secret scrubbed."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return redact_secrets(text, secrets)


def write_crash_report(exc: BaseException, directory: Path, secrets: list[str]) -> Path:
    """Write `crash_report(exc)` to a new private file under `directory`; returns its path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = directory / f"crash-{stamp}-{os.getpid()}-{os.urandom(3).hex()}.txt"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(crash_report(exc, secrets))
    return path
