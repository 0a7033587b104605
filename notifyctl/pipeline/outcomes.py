"""What became of one attempt, and the one recorder that writes it down.

A provider call ends in one of four outcome classes (ARCHITECTURE.md, "The provider boundary"):

    sent        the provider accepted the message (its id is kept)
    rejected    a permanent error: never retried; a dead letter, plus what the error asks for
                (suppress the address, drop the push token, disable the webhook endpoint). A push
                token gone for good (`token_gone`: FCM UNREGISTERED) is routine churn: the token is
                dropped and the delivery skipped (`token_unregistered`), with no dead letter
    not_sent    nothing reached the provider, or it answered clearly (5xx, 408, 429): retried with
                backoff until the attempts run out, then a dead letter
    unknown     the request was written, then a timeout, a reset or an unreadable answer: the message
                may exist. In doubt, exactly as after a crash: re-sent where the receiver dedupes,
                held for the operator otherwise (`resend_in_doubt`)

and one that comes before the call:

    withdrawn   the claim found that policy no longer allows it (an opt-out landed after the
                decision), or another database holds its idempotency key: skipped or deferred, and
                the attempt's intent is undone (the attempt never happened)

An Outcome is a flat record so that a Redis worker can carry it to the coordinator as it is
(`as_fields` / `from_fields`). `write` maps every class to the outbox, the attempts table and the
dead letters; the embedded ledger, the sender processes and the coordinator's collector all call
it, so recording exists once.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from notifyctl.errors import OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import AttemptOutcome, Decision, DeliveryState, Envelope
from notifyctl.providers.base import provider_class
from notifyctl.security.redaction import Scrubber
from notifyctl.settings import Settings
from notifyctl.store import directory, endpoints, outbox
from notifyctl.store.db import iso, transaction

MAX_ERROR_CHARS = 500
# Scrubbed before it is cut to MAX_ERROR_CHARS, so that a secret across the cut is not left half.
_SCRUBBED_CHARS = 4 * MAX_ERROR_CHARS
_SHAPES_ONLY = Scrubber()


class Kind(StrEnum):
    sent = "sent"
    rejected = "rejected"
    not_sent = "not_sent"
    unknown = "unknown"
    withdrawn = "withdrawn"


EFFECTS = ("suppress", "remove_device", "disable_endpoint")
TOKEN_UNREGISTERED = "token_unregistered"  # the skip reason of a delivery whose push token is gone


@dataclass(slots=True)
class Outcome:
    """One attempt's outcome, with what recording it needs (nothing secret: no signing secrets).
    Made once per message: slots, and not frozen (a frozen dataclass pays a setattr per field)."""

    kind: Kind
    run_id: str
    delivery_id: int
    attempt: int
    provider: str
    channel: str
    user_id: str | None = None
    address: str | None = None
    latency_ms: float = 0.0
    message_id: str | None = None  # sent: the provider's message id
    code: str | None = None  # the error's code (HTTP status, Twilio error, …)
    error_class: str | None = None
    message: str | None = None
    rate_limited: bool = False  # not_sent: the provider said slow down
    retry_at: float | None = None  # not_sent, unknown re-sent: when to try again (epoch s); None: now, or never
    resend: bool = False  # unknown: the receiver dedupes, so it is re-sent in this run
    state: str | None = None  # withdrawn: skipped | deferred; rejected: skipped when the token is gone
    reason: str | None = None  # withdrawn and rejected-skipped: why; unknown: what made it unknown
    until: str | None = None  # withdrawn and deferred: until when (ISO)
    effects: tuple[str, ...] = ()  # rejected: suppress, remove_device, disable_endpoint
    envelope: dict[str, Any] | None = field(default=None, repr=False)  # dead letters keep it

    @property
    def final(self) -> bool:
        """Whether the delivery is settled by this outcome (no further attempt in this run)."""
        if self.kind is Kind.not_sent:
            return self.retry_at is None
        if self.kind is Kind.unknown:
            return not self.resend
        return True

    @property
    def progress_state(self) -> str:
        """The delivery state this outcome leaves behind, as progress bars count it."""
        if self.kind is Kind.sent:
            return DeliveryState.sent
        if self.kind is Kind.withdrawn or (self.kind is Kind.rejected and self.state):
            return self.state or DeliveryState.skipped
        if self.kind is Kind.unknown:
            return DeliveryState.pending if self.resend else DeliveryState.in_doubt
        if self.kind is Kind.not_sent and self.retry_at is not None:
            return DeliveryState.pending
        return DeliveryState.dead

    def as_fields(self) -> dict[Any, Any]:
        """For a Redis stream entry."""
        return {"o": orjson.dumps(asdict(self)).decode()}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Outcome:
        raw = orjson.loads(fields["o"])
        raw["kind"] = Kind(raw["kind"])
        raw["effects"] = tuple(raw.get("effects") or ())
        return cls(**raw)


def classify(exc: BaseException) -> ProviderError:
    """Anything a provider raised, as a ProviderError. An unexpected exception is a provider bug: it
    happened after the call was made, so nothing proves the message was not accepted — in doubt."""
    if isinstance(exc, ProviderError):
        return exc
    return OutcomeUnknown(f"unexpected {type(exc).__name__}: {exc}")


def resend_in_doubt(settings: Settings, provider_name: str) -> bool:
    """Whether an attempt of unknown outcome on this provider account is re-sent: where the receiver
    dedupes (webhook-id, one inbox row or .eml per message id), or everywhere when the operator chose
    `in_doubt = "resend"`. Otherwise it is held for `dlq redrive --in-doubt`."""
    if settings.in_doubt == "resend":
        return True
    conf = settings.providers.get(provider_name)
    return conf is not None and bool(provider_class(conf.type).capabilities.idempotent)


def _base(envelope: Envelope, attempt: int, provider: str, latency_ms: float) -> dict[str, Any]:
    return {
        "run_id": envelope.run_id,
        "delivery_id": envelope.delivery_id,
        "attempt": attempt,
        "provider": provider,
        "channel": envelope.channel,
        "user_id": envelope.user_id,
        "address": envelope.address,
        "latency_ms": latency_ms,
    }


def sent(envelope: Envelope, attempt: int, provider: str, message_id: str | None, latency_ms: float) -> Outcome:
    return Outcome(
        Kind.sent,
        envelope.run_id,
        envelope.delivery_id,
        attempt,
        provider,
        envelope.channel,
        envelope.user_id,
        envelope.address,
        latency_ms,
        message_id,
    )


def failed(
    envelope: Envelope,
    attempt: int,
    provider: str,
    error: ProviderError,
    latency_ms: float,
    *,
    retry_at: float | None,
    resend: bool,
    scrub: Scrubber | None = None,
) -> Outcome:
    """The outcome of an attempt that raised: rejected, not sent (retry at `retry_at`, or given up
    when None) or unknown (re-sent when `resend`, else held).

    The error's text is the provider's, and providers quote what they were sent (an SMTP 535 with
    the password, an API error echoing the token): it is scrubbed of the configured secrets (`scrub`,
    built once from the settings), the envelope's signing secrets and every known secret shape before
    anything stores, reports or prints it."""
    message = (scrub or _SHAPES_ONLY)(str(error)[:_SCRUBBED_CHARS], envelope.signing_secrets)[:MAX_ERROR_CHARS]
    base = _base(envelope, attempt, provider, latency_ms)
    base.update(code=getattr(error, "code", None), error_class=type(error).__name__)
    if isinstance(error, PermanentError):
        effects = tuple(name for name in EFFECTS if getattr(error, name))
        if error.token_gone:  # routine churn: the token goes, the delivery is skipped (no dead letter)
            effects = tuple(dict.fromkeys((*effects, "remove_device")))
            skipped = DeliveryState.skipped
            return Outcome(
                Kind.rejected, message=message, effects=effects, state=skipped, reason=TOKEN_UNREGISTERED, **base
            )
        envelope_json = envelope.model_dump(mode="json")
        return Outcome(Kind.rejected, message=message, effects=effects, envelope=envelope_json, **base)
    if isinstance(error, OutcomeUnknown):
        when = retry_at if resend else None
        return Outcome(Kind.unknown, message=message, resend=resend, retry_at=when, reason="outcome_unknown", **base)
    assert isinstance(error, TransientError)
    dead_letter: dict[str, Any] | None = None
    if retry_at is None:
        message = f"gave up after {attempt} attempts: {message}"[:MAX_ERROR_CHARS]
        dead_letter = envelope.model_dump(mode="json")
    return Outcome(
        Kind.not_sent,
        message=message,
        rate_limited=isinstance(error, RateLimited),
        retry_at=retry_at,
        envelope=dead_letter,
        **base,
    )


def withdrawn(envelope: Envelope, attempt: int, provider: str, decision: Decision) -> Outcome:
    """Policy said no at the claim (or the key belongs to another database): skipped or deferred."""
    state = DeliveryState.deferred if decision.action == "defer" else DeliveryState.skipped
    until = iso(decision.until) if decision.until else None
    base = _base(envelope, attempt, provider, 0.0)
    return Outcome(Kind.withdrawn, state=state, reason=decision.reason, until=until, **base)


def crashed(run_id: str, delivery_id: int, attempt: int, provider: str, channel: str, resend: bool) -> Outcome:
    """An attempt found in flight after a crash, or a published delivery whose outcome was lost."""
    return Outcome(
        Kind.unknown,
        run_id=run_id,
        delivery_id=delivery_id,
        attempt=attempt,
        provider=provider,
        channel=channel,
        resend=resend,
        reason="crash_during_send",
        message="the process sending it stopped before its outcome was recorded",
    )


# --- the recorder ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """What recording needs besides the outcome."""

    webhook_disable_after_s: float = 72 * 3600


def write(conn: sqlite3.Connection, outcome: Outcome, recording: Recording) -> None:
    """Record one outcome (inside the caller's transaction: the ledger's batch, or the collector's)."""
    kind = outcome.kind
    delivery_id, attempt = outcome.delivery_id, outcome.attempt
    if kind is Kind.sent:
        outbox.mark_sent(conn, delivery_id, attempt, outcome.provider, outcome.message_id, outcome.latency_ms)
        if outcome.channel == "webhook" and outcome.user_id:
            endpoints.record_success(conn, outcome.user_id)
    elif kind is Kind.withdrawn:
        state = outcome.state or DeliveryState.skipped
        outbox.withdraw_intent(conn, delivery_id, attempt, state, outcome.reason, outcome.until)
    elif kind is Kind.rejected and outcome.state == DeliveryState.skipped:  # the push token is gone
        outbox.mark_skipped_after_attempt(
            conn,
            delivery_id,
            attempt,
            outcome.latency_ms,
            outcome.code,
            outcome.message or "",
            outcome.reason or TOKEN_UNREGISTERED,
        )
        _side_effects(conn, outcome)
    elif kind is Kind.unknown:
        outbox.mark_in_doubt(
            conn,
            delivery_id,
            attempt,
            outcome.resend,
            outcome.reason,
            outcome.code,
            outcome.message,
            next_attempt_at=outcome.retry_at,
        )
    elif kind is Kind.not_sent and outcome.retry_at is not None:
        outcome_name = AttemptOutcome.rate_limited if outcome.rate_limited else AttemptOutcome.transient
        outbox.mark_retry(
            conn,
            delivery_id,
            attempt,
            outcome_name,
            outcome.latency_ms,
            outcome.code,
            outcome.error_class or "TransientError",
            outcome.message or "",
            outcome.retry_at,
        )
        _endpoint_failed(conn, outcome, recording)
    else:  # rejected, or not sent and given up: a dead letter
        permanent = kind is Kind.rejected
        outcome_name = (
            AttemptOutcome.permanent
            if permanent
            else (AttemptOutcome.rate_limited if outcome.rate_limited else AttemptOutcome.transient)
        )
        outbox.mark_dead(
            conn,
            delivery_id,
            attempt=attempt or None,
            outcome=outcome_name,
            latency_ms=outcome.latency_ms,
            code=outcome.code,
            error_class=outcome.error_class or ("PermanentError" if permanent else "TransientError"),
            message=outcome.message or "",
            envelope=outcome.envelope,
        )
        if permanent:
            _side_effects(conn, outcome)
        else:
            _endpoint_failed(conn, outcome, recording)


def write_if_current(conn: sqlite3.Connection, outcome: Outcome, recording: Recording) -> bool:
    """For an outcome reported by another process (a Redis worker): recorded only while its attempt
    is still the delivery's attempt in flight; a late report for an attempt already settled (in
    doubt after Redis lost its data, say) is not. Returns whether it was recorded."""
    if not outbox.in_flight_attempt(conn, outcome.delivery_id, outcome.attempt):
        return False
    write(conn, outcome, recording)
    return True


def _endpoint_failed(conn: sqlite3.Connection, outcome: Outcome, recording: Recording) -> None:
    """A webhook endpoint that keeps failing for the configured period is disabled (and audited); a
    success starts its clock again."""
    if outcome.channel == "webhook" and outcome.user_id:
        endpoints.record_failure(conn, outcome.user_id, datetime.now(UTC), recording.webhook_disable_after_s)


def _side_effects(conn: sqlite3.Connection, outcome: Outcome) -> None:
    """What a permanent error asks for: suppress the address, drop the push token, disable the endpoint."""
    source = f"provider:{outcome.code}"
    if "suppress" in outcome.effects and outcome.address:
        reason = "stop" if outcome.channel == "sms" else "bounce"
        directory.suppress_as_seen(conn, outcome.channel, outcome.address, reason, source)
    if "remove_device" in outcome.effects and outcome.address:
        directory.remove_device(conn, outcome.user_id, outcome.address, reason=source)
    if "disable_endpoint" in outcome.effects and outcome.user_id:
        directory.disable_endpoint(conn, outcome.user_id, reason=source)


def due_in(outcome: Outcome) -> float:
    """Seconds until the next attempt of a not-sent or re-sent unknown outcome (0: due now)."""
    if outcome.retry_at is None:
        return 0.0
    return max(0.0, outcome.retry_at - time.time())


def recover_inflight(conn: sqlite3.Connection, run_id: str, settings: Settings) -> tuple[int, int]:
    """After a crash: every attempt left in flight is of unknown outcome (`crashed`), recorded as any
    unknown outcome is: re-sent where the receiver dedupes, held otherwise. Returns (re-sent, held)."""
    resent = held = 0
    with transaction(conn):
        for row in outbox.inflight(conn, run_id):
            resend = resend_in_doubt(settings, row["provider"] or "")
            outcome = crashed(run_id, row["id"], row["attempts"], row["provider"] or "", row["channel"], resend)
            write(conn, outcome, Recording())
            resent, held = resent + resend, held + (not resend)
    return resent, held
