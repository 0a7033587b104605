"""The embedded Recorder: a Sender's intents and outcomes, written to the outbox via the ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from notifyctl.addresses import AddressError
from notifyctl.errors import PermanentError, ProviderError, Taken, TransientError, Withdrawn
from notifyctl.models import Envelope, SendResult
from notifyctl.pipeline.sender import Failure
from notifyctl.store import directory, endpoints, runs
from notifyctl.store.db import iso
from notifyctl.store.ledger import Ledger


def apply_side_effects(conn: sqlite3.Connection, envelope: Envelope, error: PermanentError) -> None:
    """What a permanent error asks for: suppress the address, drop the push token, disable the endpoint."""
    code = error.code
    if error.suppress and envelope.address:
        reason = "stop" if envelope.channel == "sms" else "bounce"
        try:
            directory.add_suppression(conn, envelope.channel, envelope.address, reason, source=f"provider:{code}")
        except AddressError:
            # An address the directory would not accept today: keep it exactly as the provider saw it.
            conn.execute(
                "INSERT OR IGNORE INTO suppressions VALUES (?, ?, ?, ?, ?)",
                (envelope.channel, envelope.address, reason, f"provider:{code}", iso()),
            )
    if error.remove_device and envelope.address:
        directory.remove_device(conn, envelope.user_id, envelope.address, reason=f"provider:{code}")
    if error.disable_endpoint and envelope.user_id:
        directory.disable_endpoint(conn, envelope.user_id, reason=f"provider:{code}")


class LedgerRecorder:
    """Intents are awaited (committed before the provider call); outcomes are queued for the next
    batch commit without waiting, in order behind the intent."""

    def __init__(
        self,
        ledger: Ledger,
        webhook_disable_after_s: float = 72 * 3600,
        guard: Callable[[Envelope, int, int], bool] | None = None,
    ) -> None:
        """`guard(envelope, attempt, directory_version)`: asked once the intent is committed whether
        the delivery may still go out (False: it settled the delivery itself, and it is not sent)."""
        self.ledger = ledger
        self.webhook_disable_after_s = webhook_disable_after_s
        self.guard = guard

    def _endpoint_failed(self, conn: sqlite3.Connection, envelope: Envelope) -> None:
        """A webhook endpoint that keeps failing for the configured period is disabled (and audited);
        a success (Ledger.sent) starts its clock again."""
        if envelope.channel != "webhook" or not envelope.user_id:
            return
        endpoints.record_failure(conn, envelope.user_id, datetime.now(UTC), self.webhook_disable_after_s)

    async def intent(self, envelope: Envelope, attempt: int, provider: str) -> None:
        version = await self.ledger.intent(envelope.delivery_id, attempt, provider)
        if version is None:
            raise Taken(f"delivery {envelope.delivery_id} was taken by another sender process")
        if self.guard is not None and not self.guard(envelope, attempt, version):
            raise Withdrawn(f"delivery {envelope.delivery_id} withdrawn by policy")

    async def sent(
        self, envelope: Envelope, attempt: int, provider: str, result: SendResult, latency_ms: float
    ) -> None:
        endpoint_user = envelope.user_id if envelope.channel == "webhook" else None
        self.ledger.sent(envelope.delivery_id, attempt, provider, result.provider_message_id, latency_ms, endpoint_user)

    async def retry(
        self, envelope: Envelope, attempt: int, provider: str, error: TransientError, latency_ms: float, due: float
    ) -> None:
        f = Failure.of(error, attempt)

        def write(conn: sqlite3.Connection) -> None:
            runs.mark_retry(
                conn, envelope.delivery_id, attempt, f.outcome, latency_ms, f.code, f.error_class, f.message, due
            )
            self._endpoint_failed(conn, envelope)

        self.ledger.post(write)

    async def dead(
        self, envelope: Envelope, attempt: int, provider: str, error: ProviderError, latency_ms: float, gave_up: bool
    ) -> None:
        f = Failure.of(error, attempt, gave_up)
        envelope_json = envelope.model_dump(mode="json")

        def write(conn: sqlite3.Connection) -> None:
            runs.mark_dead(
                conn,
                envelope.delivery_id,
                attempt=attempt,
                outcome=f.outcome,
                latency_ms=latency_ms,
                code=f.code,
                error_class=f.error_class,
                message=f.message,
                envelope=envelope_json,
            )
            if isinstance(error, PermanentError):
                apply_side_effects(conn, envelope, error)
            else:
                self._endpoint_failed(conn, envelope)

        self.ledger.post(write)
