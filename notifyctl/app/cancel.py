"""Cancel a run: it ends, what it has not sent is skipped (cancelled) and audited, and it is never resumed."""

from __future__ import annotations

from dataclasses import dataclass

from notifyctl.app.context import Context
from notifyctl.errors import InputError, PolicyRefused
from notifyctl.states import FINISHED_RUN_STATES, RunState
from notifyctl.store import locks, outbox, runs
from notifyctl.store.db import record_event, transaction

CANCELLED = "cancelled"  # the reason of every delivery a cancel skipped


@dataclass
class Cancelled:
    """A run cancelled: how many deliveries were skipped, and how many were held in doubt (left in
    flight by a crash: they may have reached the provider)."""

    run_id: str
    previous_state: str
    skipped: int
    held_in_doubt: int


def cancel(ctx: Context, run_id: str, reason: str = "cancelled by the operator") -> Cancelled:
    """End a run that has not finished. Under the run's lock, so that no process sends from it
    meanwhile; a run a live process is driving is refused (stop that process first)."""
    run = runs.get_run(ctx.conn, run_id)
    if run is None:
        raise InputError(f"unknown run '{run_id}' (see `notifyctl runs list`)")
    lock = f"run:{run_id}"
    if not locks.acquire_lock(ctx.conn, lock, owner="cancel"):
        holder = locks.live_holder(ctx.conn, lock)
        raise PolicyRefused(
            f"run {run_id} is being sent right now by notifyctl process {holder}: stop it first "
            f"(Ctrl-C, or kill -TERM {holder}; it stops cleanly), then cancel again"
        )
    try:
        run = runs.get_run(ctx.conn, run_id) or run
        if run.state in FINISHED_RUN_STATES and run.state != RunState.failed:  # failed: resumable by name
            raise PolicyRefused(f"run {run_id} is {run.state} already; there is nothing to cancel")
        handed_out = len(outbox.inflight(ctx.conn, run_id)) if runs.on_cluster(ctx.conn, run_id) else 0
        if handed_out:  # Redis workers may still send them: only the cluster can settle them
            raise PolicyRefused(
                f"run {run_id} has {handed_out} deliveries handed to Redis workers and not settled: "
                f"settle them first (`notifyctl resume {run_id} --redis URL`), then cancel"
            )
        with transaction(ctx.conn):
            skipped, held = runs.cancel_unsent(ctx.conn, run_id)
            runs.end_run(ctx.conn, run_id, RunState.cancelled, reason)
            record_event(
                ctx.conn,
                "run_cancelled",
                run_id,
                {"previous_state": run.state, "skipped": skipped, "held_in_doubt": held, "reason": reason},
            )
        return Cancelled(run_id, run.state, skipped, held)
    finally:
        locks.release_lock(ctx.conn, lock)
