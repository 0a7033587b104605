"""The states stored in the database: a delivery's, a run's and an attempt's outcome.

StrEnum, so a member equals the text in the database (`DeliveryState.sent == "sent"`), reads back
as a plain string and compares with one. The SQL keeps its literals (`WHERE state='pending'`);
Python code names the members. A module of its own that imports nothing but enum, so that store/
(the users-import helper process) and the CLI's start-up use them without loading pydantic;
notifyctl.models re-exports them.
"""

from __future__ import annotations

import enum


class DeliveryState(enum.StrEnum):
    """Outbox states (the deliveries table). `pending → inflight → sent`, or one of the others."""

    pending = "pending"
    inflight = "inflight"
    sent = "sent"
    skipped = "skipped"
    deferred = "deferred"
    dead = "dead"
    in_doubt = "in_doubt"


class RunState(enum.StrEnum):
    """Run states (the runs table)."""

    scheduled = "scheduled"
    running = "running"
    interrupted = "interrupted"
    waiting = "waiting"  # only deferred deliveries (quiet hours) are left
    completed = "completed"
    completed_with_failures = "completed_with_failures"
    failed = "failed"  # stopped before or while planning (provider set-up, input): runs.end_reason says why
    cancelled = "cancelled"  # `notifyctl runs cancel`: what was left unsent is skipped (cancelled)


# Runs that are over: `resume --due` passes them by, `runs cancel` refuses them.
FINISHED_RUN_STATES = frozenset(
    {RunState.completed, RunState.completed_with_failures, RunState.failed, RunState.cancelled}
)


class AttemptOutcome(enum.StrEnum):
    """An attempt's outcome (the attempts table): `inflight` from the intent until the answer."""

    inflight = "inflight"
    sent = "sent"
    transient = "transient"
    rate_limited = "rate_limited"
    permanent = "permanent"
    in_doubt = "in_doubt"
    template_error = "template_error"
