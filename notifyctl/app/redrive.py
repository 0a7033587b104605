"""Re-drive dead letters (or deliveries held in doubt) as a new run that keeps their identity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from notifyctl.app.audit import known_run
from notifyctl.app.context import Context
from notifyctl.app.drive import drive
from notifyctl.errors import InputError, NotFound
from notifyctl.models import RunState
from notifyctl.pipeline.engine import Progress, RunOutcome
from notifyctl.store import dead_letters as letters
from notifyctl.store import redrive as redrives
from notifyctl.store import runs
from notifyctl.store.db import iso, parse_iso


@dataclass
class RedrivePlan:
    """The deliveries to re-drive, and those refused with the reason."""

    delivery_ids: list[int]
    refused: list[tuple[int, str]]


def select_for_redrive(
    ctx: Context,
    *,
    ids: list[int] | None = None,
    run_id: str | None = None,
    all_: bool = False,
    in_doubt: bool = False,
    force: bool = False,
) -> RedrivePlan:
    """The chosen dead letters (or in-doubt deliveries); those older than the idempotency window
    are refused unless forced, and ids that are not dead letters are refused too."""
    if not (ids or run_id or all_):
        raise InputError("say which dead letters to redrive: --id ID, --run RUN or --all")
    known_run(ctx, run_id)
    window = timedelta(hours=ctx.settings.idempotency_window_hours)
    now = ctx.clock()
    chosen: list[int] = []
    refused: list[tuple[int, str]] = []
    for row in redrives.candidates(ctx.conn, ids=ids, run_id=run_id, in_doubt=in_doubt):
        if now - parse_iso(row["created"]) > window and not force:
            refused.append(
                (
                    row["id"],
                    f"older than the idempotency window ({ctx.settings.idempotency_window_hours:g} h); "
                    "pass --force to send anyway",
                )
            )
            continue
        chosen.append(row["id"])
    if ids:
        found = set(chosen) | {i for i, _ in refused}
        missing = [i for i in ids if i not in found]
        unknown = [i for i in missing if not in_doubt and letters.dead_letter(ctx.conn, i) is None]
        if unknown and len(unknown) == len(ids) and not (run_id or all_):  # nothing named exists
            raise NotFound(f"no dead letter for delivery {', '.join(map(str, unknown))} (see `notifyctl dlq list`)")
        refused.extend((i, "no such dead letter (or already redriven)") for i in missing)
    return RedrivePlan(chosen, refused)


def create_redrive_run(ctx: Context, delivery_ids: list[int], *, rate: float | None = None) -> str:
    """A new run whose deliveries keep the originals' identity (idempotency key, message id); each
    carries its original run's shared data, since the redrive run has none of its own."""
    run_id = runs.new_run_id("redrive")
    now = iso(ctx.clock())
    runs.create_run(
        ctx.conn,
        run_id=run_id,
        kind="redrive",
        template="(redrive)",
        template_version="-",
        category="-",
        channels=redrives.channels_of(ctx.conn, delivery_ids),
        state=RunState.running,
        options={"rate": rate, "redrive_of": len(delivery_ids)},
    )
    redrives.copy_into_run(ctx.conn, run_id, delivery_ids, lambda name: ctx.templates.get(name).version, now)
    return run_id


async def redrive(
    ctx: Context, plan: RedrivePlan, *, rate: float | None = None, progress: Progress | None = None
) -> RunOutcome | None:
    """Send the plan's deliveries again through the whole pipeline (policy, idempotency, limits),
    at most `rate` a second; None when there is nothing to send."""
    if not plan.delivery_ids:
        return None
    run_id = create_redrive_run(ctx, plan.delivery_ids, rate=rate)
    if rate:
        for conf in ctx.settings.providers.values():
            conf.rate = min(conf.rate, rate)
            conf.burst = min(conf.burst or int(rate), max(1, int(rate)))
    return await drive(ctx, run_id, None, progress, None, allow_template_change=True)
