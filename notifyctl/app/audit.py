"""The audit log, recent runs and one run's details, as `audit`, `runs list` and `runs show` show them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from notifyctl.app.context import Context
from notifyctl.errors import InputError, NotFound
from notifyctl.models import DeliveryState
from notifyctl.store import audit, runs
from notifyctl.store.audit import AUDIT_COLUMNS
from notifyctl.store.db import parse_iso

__all__ = ["AUDIT_COLUMNS", "audit_count", "audit_rows", "recent_runs", "run_deliveries", "run_details"]


def _known_state(state: str | None) -> None:
    if state is not None and state not in tuple(DeliveryState):
        known = ", ".join(DeliveryState)
        raise InputError(f"--status: unknown state '{state}' (known: {known})")


def audit_rows(
    ctx: Context,
    *,
    run_id: str | None = None,
    user_id: str | None = None,
    state: str | None = None,
    limit: int = 0,
    newest_first: bool = False,
) -> Iterator[dict[str, Any]]:
    """Deliveries with their decision, provider, ids, attempts and times, streamed from the database;
    at most `limit` (0: all)."""
    _known_state(state)
    known_run(ctx, run_id)
    return audit.iter_audit_rows(
        ctx.conn, run_id=run_id, user_id=user_id, state=state, limit=limit, newest_first=newest_first
    )


def audit_count(
    ctx: Context, *, run_id: str | None = None, user_id: str | None = None, state: str | None = None
) -> int:
    """How many deliveries the same filters match."""
    _known_state(state)
    known_run(ctx, run_id)
    return audit.count_audit_rows(ctx.conn, run_id=run_id, user_id=user_id, state=state)


def run_deliveries(ctx: Context, run_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """A small run's deliveries (a one-off send's): what happened to each and why, with its ids."""
    return [
        {
            "delivery_id": row["id"],
            "channel": row["channel"],
            "state": row["state"],
            "reason": row["reason"] or row["error_class"],
            "provider": row["provider"],
            "provider_message_id": row["provider_message_id"],
            "message_id": row["message_id"],
            "error": row["error_message"],
        }
        for row in audit.iter_audit_rows(ctx.conn, run_id=run_id, limit=limit)
    ]


def known_run(ctx: Context, run_id: str | None) -> None:
    """A run named as a filter must exist: a typo is not-found (exit 2), not an empty answer."""
    if run_id is not None and runs.get_run(ctx.conn, run_id) is None:
        raise NotFound(f"unknown run '{run_id}' (see `notifyctl runs list`)")


def recent_runs(ctx: Context, limit: int = 50) -> list[tuple[runs.Run, dict[str, dict[str, int]]]]:
    """The newest runs, each with its counts per channel and state."""
    return [(run, runs.counts(ctx.conn, run.run_id)) for run in runs.list_runs(ctx.conn, limit)]


def run_details(ctx: Context, run_id: str) -> dict[str, Any]:
    """One run: what it is, its times and rate, counts per channel and state, reasons, top errors."""
    run = runs.get_run(ctx.conn, run_id)
    if run is None:
        raise NotFound(f"unknown run '{run_id}' (see `notifyctl runs list`)")
    counts = runs.counts(ctx.conn, run_id)
    sent = sum(states.get(DeliveryState.sent, 0) for states in counts.values())
    elapsed = None
    if run.started:
        end = parse_iso(run.finished) if run.finished else ctx.clock()
        elapsed = round((end - parse_iso(run.started)).total_seconds(), 3)
    errors = audit.run_errors(ctx.conn, run_id)
    requests = audit.provider_requests(ctx.conn, run_id)
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "campaign_id": run.campaign_id,
        "template": run.template,
        "template_version": run.template_version,
        "category": run.category,
        "channels": run.channels,
        "state": run.state,
        "created": run.created,
        "started": run.started,
        "finished": run.finished,
        "send_at": run.send_at,
        "elapsed_s": elapsed,
        "rate_per_s": round(sent / elapsed, 1) if elapsed else None,
        "provider_requests": requests,
        "rejected_rows": run.options.get("rejected_count", 0),
        "counts": counts,
        "reasons": runs.reasons(ctx.conn, run_id),
        "errors": errors,
    }
