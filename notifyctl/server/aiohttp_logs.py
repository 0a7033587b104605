"""aiohttp's own log records, without what the client sent.

aiohttp logs a request it cannot parse (a header line over its limit, a bad character, a broken
chunk) as "Error handling request" with the parser's exception, and that exception quotes the
offending bytes: an over-long `Authorization: Bearer nk_…` header put the whole API key into the
log. A filter on aiohttp's loggers rewrites every record before any handler sees it:

- a parser error (`HttpProcessingError`) keeps its class and status only, at warning level: a
  client's malformed request is not the server's error, and its text is the client's bytes;
- anything else keeps its message and traceback, scrubbed of the configured secrets, API keys and
  the other known secret shapes (security/redaction.py).

`serve` installs it at start and removes it at cleanup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from aiohttp.http_exceptions import HttpProcessingError

from notifyctl.security.redaction import Scrubber

AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal")
_FORMATTER = logging.Formatter()


class ScrubAiohttp(logging.Filter):
    """Rewrites aiohttp's records in place (see the module's docstring); never drops one."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.scrub = Scrubber(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = self.scrub(record.getMessage())
        if isinstance(exc, HttpProcessingError):
            message = f"{message}: unreadable request, {type(exc).__name__} ({exc.code})"
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        elif record.exc_info:
            record.exc_text = self.scrub(_FORMATTER.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        record.msg, record.args, record.exc_info = message, None, None
        return True


def install(secrets: Iterable[str]) -> Callable[[], None]:
    """Put a ScrubAiohttp on aiohttp's loggers; returns what takes it off again."""
    scrubber = ScrubAiohttp(secrets)
    loggers = [logging.getLogger(name) for name in AIOHTTP_LOGGERS]
    for logger in loggers:
        logger.addFilter(scrubber)

    def uninstall() -> None:
        for logger in loggers:
            logger.removeFilter(scrubber)

    return uninstall
