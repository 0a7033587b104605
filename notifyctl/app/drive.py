"""Driving a run to its end under the run's lock: one notifyctl process works on a run at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from notifyctl.app.context import Context
from notifyctl.app.sizing import _engine_for
from notifyctl.errors import PolicyRefused
from notifyctl.pipeline.engine import Engine, PlanBatch, Progress, RunOutcome
from notifyctl.store import locks


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
        engine = await _engine_for(ctx, run_id, progress, allow_template_change)
        if on_engine:
            on_engine(engine)
        return await engine.run(run_id, source, allow_template_change=allow_template_change)
    finally:
        locks.release_lock(ctx.conn, lock)
