"""How many sender processes a run gets, and the engine that drives it with them."""

from __future__ import annotations

import os
from pathlib import Path

from notifyctl.app.context import Context
from notifyctl.backends import processes as shards
from notifyctl.backends.local import LocalBackend
from notifyctl.models import DeliveryState
from notifyctl.pipeline.engine import Engine, Progress
from notifyctl.store import runs

# `processes = "auto"`: a run with at least this many deliveries to send gets a sender process per
# core (at most AUTO_PROCESSES_MAX); below it, starting processes costs more than it saves.
AUTO_PROCESSES_FROM = 10_000
AUTO_PROCESSES_MAX = 4
# ... and only when a channel's providers allow more than one process sends: below this many
# messages a second, more processes would only split the rate (and add arrival jitter).
AUTO_PROCESSES_RATE = 500.0


def _lines_after(path: Path, offset: int) -> int:
    """Lines of a file after a byte offset (the rows still to plan), counted without parsing."""
    count = 0
    with path.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _sender_processes(ctx: Context, run: runs.Run | None) -> int:
    """How many sender processes a run gets: one for a one-off send; else the `processes` setting,
    or for "auto" one per core (up to AUTO_PROCESSES_MAX) when the run has AUTO_PROCESSES_FROM
    deliveries or more to send and one of its channels may send at AUTO_PROCESSES_RATE a second
    or more."""
    if run is None or run.kind == "send":  # a handful of rows: not worth starting processes
        return 1
    setting = ctx.settings.processes
    if setting != "auto":
        return setting
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores = min(usable, AUTO_PROCESSES_MAX)
    if cores < 2:
        return 1
    rates = [
        sum(ctx.settings.providers[name].rate for name in route.names if name in ctx.settings.providers)
        for channel, route in ctx.settings.channels.items()
        if channel in run.channels
    ]
    if not rates or max(rates) < AUTO_PROCESSES_RATE:
        return 1
    expected = sum(by_state.get(DeliveryState.pending, 0) for by_state in runs.counts(ctx.conn, run.run_id).values())
    path = Path(run.audience_path) if run.audience_path else None
    if not run.planned and path is not None and path.is_file():
        expected += _lines_after(path, run.plan_offset) * max(1, len(run.channels))
    return cores if expected >= AUTO_PROCESSES_FROM else 1


async def _engine_for(ctx: Context, run_id: str, progress: Progress | None, allow_template_change: bool) -> Engine:
    """The engine of a run; with N sender processes, it sends shard 0 and N-1 sibling processes the rest."""
    engine = ctx.engine(progress)
    if not isinstance(engine.backend, LocalBackend):
        return engine  # the cluster scales out with workers instead
    run = runs.get_run(ctx.conn, run_id)
    processes = _sender_processes(ctx, run)
    if processes > 1:
        engine = ctx.engine(progress, LocalBackend(shard=(0, processes)))
        engine.siblings = await shards.spawn(ctx.settings, run_id, processes, allow_template_change)
    return engine
