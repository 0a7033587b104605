"""What a run writes to the log (`--log-file`, `-v`): JSON lines through logs.py's allowlist and
redaction, never a message body, an error's text or an address in clear.

    info   run_started, run_finished (counts by state), retry_scheduled, dead_letter, held_in_doubt,
           opt_out_applied (a delivery withdrawn at dispatch by an opt-out), suppression_added
           (a provider said STOP, or bounced), crash_recovered
    debug  attempt: every attempt's outcome class (sent, rejected, not_sent, unknown, withdrawn)

An attempt is a hot path (thousands a second): whether its lines are written is decided once, when
the sender starts (`OutcomeLog.if_enabled()`), from the logger's level; below that level nothing is
built or formatted per message.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from notifyctl.logs import address_field
from notifyctl.pipeline.outcomes import Kind, Outcome
from notifyctl.states import DeliveryState

log = logging.getLogger("notifyctl.run")


class OutcomeLog:
    """The log lines of attempts' outcomes, at the levels enabled when it was made."""

    def __init__(self, attempts: bool, events: bool) -> None:
        self.attempts = attempts  # debug: every attempt
        self.events = events  # info: retries, dead letters, holds, opt-outs

    @classmethod
    def if_enabled(cls) -> OutcomeLog | None:
        """An OutcomeLog when the run log takes info or debug lines now, else None (nothing to do)."""
        attempts, events = log.isEnabledFor(logging.DEBUG), log.isEnabledFor(logging.INFO)
        return cls(attempts, events) if events or attempts else None

    def record(self, outcome: Outcome) -> None:
        fields = _fields(outcome)
        if self.attempts:
            log.debug("attempt %s", outcome.kind.value, extra={**fields, "event": "attempt"})
        if not self.events:
            return
        kind = outcome.kind
        if kind is Kind.not_sent and outcome.retry_at is not None:
            log.info("retry scheduled", extra={**fields, "event": "retry_scheduled"})
        elif kind is Kind.unknown and not outcome.resend:
            log.info("held in doubt", extra={**fields, "event": "held_in_doubt"})
        elif kind is Kind.withdrawn and outcome.state == DeliveryState.skipped:
            log.info("opt-out applied before the call", extra={**fields, "event": "opt_out_applied"})
        elif outcome.progress_state == DeliveryState.dead:
            log.info("dead letter", extra={**fields, "event": "dead_letter"})
        if "suppress" in outcome.effects:
            log.info("address suppressed by the provider's answer", extra={**fields, "event": "suppression_added"})


def _fields(outcome: Outcome) -> dict[str, Any]:
    """The allowlisted fields of an outcome: no error text (providers quote addresses), no user id,
    the address masked."""
    fields: dict[str, Any] = {
        "run_id": outcome.run_id,
        "delivery_id": outcome.delivery_id,
        "channel": outcome.channel,
        "provider": outcome.provider,
        "attempt": outcome.attempt,
        "outcome": outcome.kind.value,
        "state": outcome.progress_state,
        "latency_ms": round(outcome.latency_ms, 1),
    }
    if outcome.channel != "inapp":  # an in-app address is the user id: not in the log
        fields.update(address_field(outcome.address))
    if outcome.code is not None:
        fields["code"] = outcome.code
    if outcome.error_class is not None:
        fields["error_class"] = outcome.error_class
    if outcome.reason is not None:
        fields["reason"] = outcome.reason
    if outcome.retry_at is not None:
        fields["retry_in_s"] = round(max(0.0, outcome.retry_at - time.time()), 3)
    return fields


def run_started(run_id: str, kind: str, shard: tuple[int, int]) -> None:
    log.info(
        "run started", extra={"event": "run_started", "run_id": run_id, "kind": kind, "shard": f"{shard[0]}/{shard[1]}"}
    )


def run_finished(run_id: str, state: str, counts: dict[str, dict[str, int]], elapsed_s: float, sent: int) -> None:
    by_state: dict[str, int] = {}
    for states in counts.values():
        for name, n in states.items():
            by_state[name] = by_state.get(name, 0) + n
    log.info(
        "run finished",
        extra={
            "event": "run_finished",
            "run_id": run_id,
            "state": state,
            "elapsed_s": round(elapsed_s, 3),
            "sent_this_session": sent,
            **{f"count_{name}": n for name, n in sorted(by_state.items())},
        },
    )


def crash_recovered(run_id: str, resent: int, held: int) -> None:
    if resent or held:
        log.info(
            "attempts left in flight by a crash",
            extra={
                "event": "crash_recovered",
                "run_id": run_id,
                "count": resent + held,
                "resent": resent,
                "held": held,
            },
        )
