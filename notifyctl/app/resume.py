"""Resume an interrupted, scheduled or waiting run from where it stopped, re-sending nothing recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from notifyctl.app.broadcast import audience_source, recipient_planner
from notifyctl.app.checks import file_sha256
from notifyctl.app.context import Context
from notifyctl.app.drive import failing_unplanned, refuse_cancelled
from notifyctl.app.send import events_source
from notifyctl.app.sizing import _engine_for
from notifyctl.app.stdin import release_run_input
from notifyctl.errors import NotFound, PolicyRefused
from notifyctl.models import RunState
from notifyctl.pipeline.engine import Engine, PlanBatch, Progress, RunOutcome
from notifyctl.store import locks, outbox, runs
from notifyctl.store import resume as resumable
from notifyctl.store.db import iso


@dataclass
class ResumeSkipped:
    """A run `resume` left alone, and why."""

    run_id: str
    why: str


def template_changes(ctx: Context, run: runs.Run) -> list[str]:
    """The templates whose version changed since the run pinned them, described for the operator."""
    changed = []
    pinned = resumable.pinned_templates(ctx.conn, run.run_id)
    if not run.planned and run.kind == "broadcast":
        pinned.add((run.template, run.template_version))
    for name, version in sorted(pinned):
        current = ctx.templates.get(name).version
        if current != version:
            changed.append(f"{name} (run pinned {version}, now {current})")
    return changed


def _resume_source(ctx: Context, run: runs.Run) -> Iterator[PlanBatch] | None:
    """The rest of the run's input to plan (None when it was planned to the end), from the very same file."""
    if run.planned:
        return None
    if run.kind == "send":
        raise PolicyRefused(f"run {run.run_id} was interrupted before it was planned; send it again")
    path = Path(run.audience_path or "")
    if not path.is_file():
        raise PolicyRefused(f"run {run.run_id} was not fully planned and its input {path} is gone")
    if file_sha256(path) != run.audience_sha256:
        raise PolicyRefused(f"run {run.run_id}: {path} changed since the run started; refusing to guess")
    if run.kind == "events":
        return events_source(ctx, path, run.plan_offset, run.plan_line)
    template = ctx.templates.get(run.template)
    plan = recipient_planner(template, run.category, run.campaign_id or run.run_id, run.channels)
    return audience_source(path, plan, run.plan_offset, run.plan_line, set(run.options.get("duplicate_lines", [])))


async def resume(
    ctx: Context,
    run_id: str,
    *,
    allow_template_change: bool = False,
    progress: Progress | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> RunOutcome | ResumeSkipped:
    """Finish a run: in-flight rows become in doubt (or are re-sent where receivers dedupe), due
    deferred rows are released, the rest of the input is planned, and everything pending is sent."""
    run = runs.get_run(ctx.conn, run_id)
    if run is None:
        raise NotFound(f"unknown run '{run_id}' (see `notifyctl runs list`)")
    lock = f"run:{run_id}"
    if not locks.acquire_lock(ctx.conn, lock, owner="resume"):
        return ResumeSkipped(run_id, "another notifyctl process is working on this run")
    try:
        run = runs.get_run(ctx.conn, run_id) or run  # as it is now that this process holds the run
        refuse_cancelled(run)
        if run.state in (RunState.completed, RunState.completed_with_failures) and run.planned:
            return ResumeSkipped(
                run_id,
                f"run is {run.state}; nothing to resume "
                "(held deliveries: `notifyctl dlq redrive --run RUN --in-doubt`)",
            )
        # A failed run is resumed only when asked by name (it failed for a reason to fix first).
        with failing_unplanned(ctx, run_id):
            changes = template_changes(ctx, run)
            if changes and not allow_template_change:
                raise PolicyRefused(
                    f"run {run_id}: template changed since the run started: {', '.join(changes)}; "
                    "pass --allow-template-change to render the rest with the new version"
                )
            outbox.release_due_deferred(ctx.conn, run_id, ctx.clock())
            source = _resume_source(ctx, run)
            engine = await _engine_for(ctx, run_id, progress, allow_template_change)
            if on_engine:
                on_engine(engine)
            outcome = await engine.run(run_id, source, allow_template_change=allow_template_change)
            release_run_input(ctx.settings, ctx.conn, run_id)  # a copy of stdin, once planned to the end
            return outcome
    finally:
        locks.release_lock(ctx.conn, lock)


def due_runs(ctx: Context) -> list[str]:
    """Runs `resume --due` should work on now."""
    now = iso(ctx.clock())
    due: list[str] = []
    for row in resumable.unfinished_runs(ctx.conn):
        if row["state"] == RunState.scheduled and (row["send_at"] or "") > now:
            continue
        if row["state"] == RunState.running and locks.lock_holder_alive(ctx.conn, f"run:{row['run_id']}"):
            continue  # a live process is on it
        if row["state"] == RunState.waiting and not resumable.has_due_deferred(ctx.conn, row["run_id"], now):
            continue
        due.append(row["run_id"])
    return due
