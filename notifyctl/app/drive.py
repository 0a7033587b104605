"""Driving a run to its end under the run's lock: one notifyctl process works on a run at a time.

A run that fails before its input is fully planned (a provider that cannot be set up, an input
file that changed) ends `failed` with the reason, so that `resume --due` passes it by instead of
stopping at it every minute; the error still reaches the operator who started it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from notifyctl.app.context import Context
from notifyctl.app.sizing import _engine_for
from notifyctl.errors import NotifyctlError, PolicyRefused
from notifyctl.pipeline.engine import Engine, PlanBatch, Progress, RunOutcome
from notifyctl.states import FINISHED_RUN_STATES, RunState
from notifyctl.store import locks, runs
from notifyctl.store.db import transaction


def failure_reason(ctx: Context, exc: BaseException) -> str:
    """What made a run fail, in one line, with every configured secret scrubbed."""
    from notifyctl.security.redaction import configured_secrets, redact_secrets

    text = str(exc) if isinstance(exc, NotifyctlError) else f"{type(exc).__name__}: {exc}"
    return redact_secrets(" ".join(text.split()), configured_secrets(ctx.settings))


@contextmanager
def failing_unplanned(ctx: Context, run_id: str) -> Iterator[None]:
    """An error out of the block ends the run `failed` with its reason while the run is not fully
    planned (a planned one stays resumable); the error goes on to the caller."""
    try:
        yield
    except Exception as exc:
        try:
            run = runs.get_run(ctx.conn, run_id)
            if run is not None and not run.planned and run.state not in FINISHED_RUN_STATES:
                with transaction(ctx.conn):
                    runs.end_run(ctx.conn, run_id, RunState.failed, failure_reason(ctx, exc))
        except sqlite3.Error:
            pass  # the database may be what failed: the original error says more
        raise


def refuse_cancelled(run: runs.Run | None) -> None:
    """A cancelled run is never sent again."""
    if run is not None and run.state == RunState.cancelled:
        raise PolicyRefused(f"run {run.run_id} was cancelled ({run.end_reason or 'by the operator'}); not sending it")


async def drive(
    ctx: Context,
    run_id: str,
    source: Iterator[PlanBatch] | None,
    progress: Progress | None,
    on_engine: Callable[[Engine], None] | None,
    allow_template_change: bool = False,
) -> RunOutcome:
    """Plan `source` (None: the run is planned already) and send until the run is done or stopped."""
    lock = f"run:{run_id}"
    if not locks.acquire_lock(ctx.conn, lock, owner="notifyctl"):
        raise PolicyRefused(f"run {run_id} is being worked on by another notifyctl process")
    try:
        refuse_cancelled(runs.get_run(ctx.conn, run_id))  # `runs cancel` came first
        with failing_unplanned(ctx, run_id):
            engine = await _engine_for(ctx, run_id, progress, allow_template_change)
            if on_engine:
                on_engine(engine)
            return await engine.run(run_id, source, allow_template_change=allow_template_change)
    finally:
        locks.release_lock(ctx.conn, lock)
