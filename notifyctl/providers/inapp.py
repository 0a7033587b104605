"""In-app messages: rows in the `inbox` table that `notifyctl serve` shows to the user.

The row is keyed by delivery id, so a re-send of the same delivery (retry, in-doubt resume)
finds the row already there and returns it instead of adding a second one (notifyctl.store.inbox).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from notifyctl.errors import PermanentError, ProviderError, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.store import inbox

# Primary result codes (the low byte of the extended code) worth another attempt.
_TRANSIENT_SQLITE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """The one place where sqlite3 exceptions become provider errors."""
    try:
        yield
    except ProviderError:
        raise
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
        transient = (code is not None and (code & 0xFF) in _TRANSIENT_SQLITE_CODES) or (
            code is None and isinstance(exc, sqlite3.OperationalError)
        )
        if transient:
            raise TransientError(f"inbox write failed: {exc}", code=name) from exc
        raise PermanentError(f"inbox write failed: {exc}", code=name) from exc


def _inbox_message(envelope: Envelope) -> tuple[str, int, str, str, dict[str, Any]]:
    """(user id, delivery id, title, body, data) of the message; PermanentError when it is malformed."""
    parts = envelope.parts
    user_id = envelope.user_id or envelope.address
    title, body, data = parts.get("title"), parts.get("body"), parts.get("data") or {}
    if not user_id:
        raise PermanentError("in-app message without a user", code="missing_user")
    if not isinstance(title, str) or not isinstance(body, str):
        raise PermanentError("in-app message needs text parts 'title' and 'body'", code="missing_part")
    if not isinstance(data, dict):
        raise PermanentError("in-app part 'data' must be an object", code="bad_part")
    return user_id, envelope.delivery_id, title, body, data


class InAppProvider:
    """Inserts into the inbox table through its own SQLite connection."""

    capabilities = Capabilities(channels=("inapp",), idempotent=True)

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self.db_path = context.db_path
        # Short, so a locked database becomes a retryable error instead of a stalled worker.
        self.busy_timeout_ms = int(context.settings.get("busy_timeout_ms", 5000))
        self._conn: sqlite3.Connection | None = None
        # sqlite3 connections are not safe for concurrent use from several threads.
        self._lock = threading.Lock()

    async def open(self) -> None:
        with _mapped_errors():
            self._conn = await asyncio.to_thread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        return inbox.connect_writer(self.db_path, self.busy_timeout_ms)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(self._close, conn)

    def _close(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            conn.close()

    async def send(self, envelope: Envelope) -> SendResult:
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"provider {self.name} used before open()")
        with _mapped_errors():
            message = _inbox_message(envelope)
            inbox_id = await asyncio.to_thread(self._insert, conn, message)
        return SendResult(provider=self.name, provider_message_id=str(inbox_id))

    def _insert(self, conn: sqlite3.Connection, message: tuple[str, int, str, str, dict[str, Any]]) -> int:
        with self._lock:
            return inbox.add_message(conn, *message)
