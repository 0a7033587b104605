"""A dry run: the real plan and decisions, in a transaction that is rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from notifyctl.app.context import Context
from notifyctl.errors import RowError
from notifyctl.models import RunState
from notifyctl.pipeline.engine import PlanBatch
from notifyctl.pipeline.planner import Planner
from notifyctl.store import runs
from notifyctl.store.db import rolled_back


@dataclass
class DryRun:
    """What a run would do: counts per channel and state, and skip reasons."""

    counts: dict[str, dict[str, int]]
    reasons: dict[str, int]
    rejected: list[RowError] = field(default_factory=list)


async def dry_plan(
    ctx: Context,
    template: str,
    version: str,
    category: str,
    channels: list[str],
    source: Iterator[PlanBatch],
    rejected: list[RowError],
) -> DryRun:
    """Plan inside a transaction that is rolled back: the real decisions, nothing kept."""
    engine = ctx.engine()
    planner: Planner = engine.planner
    run_id = "dry-run"
    with rolled_back(ctx.conn):
        runs.create_run(
            ctx.conn,
            run_id=run_id,
            kind="dry-run",
            template=template,
            template_version=version,
            category=category,
            channels=channels,
            state=RunState.running,
        )
        for batch in source:
            planner.plan_batch(run_id, batch.items)
        result = DryRun(runs.counts(ctx.conn, run_id), runs.reasons(ctx.conn, run_id), rejected)
    return result
