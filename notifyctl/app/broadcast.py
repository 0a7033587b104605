"""Broadcast a campaign to an audience file: every row checked first, then planned as it streams."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from notifyctl.app.checks import category_for, channels_for, check_template, rejected_summary
from notifyctl.app.context import Context
from notifyctl.app.drive import drive
from notifyctl.app.dry_run import DryRun, dry_plan
from notifyctl.errors import InputError
from notifyctl.models import Recipient, RunState
from notifyctl.pipeline.engine import Engine, PlanBatch, Progress, RunOutcome
from notifyctl.pipeline.planner import PLAN_BATCH, PlanItem
from notifyctl.store import runs
from notifyctl.store.db import iso
from notifyctl.templates.template import Template

if TYPE_CHECKING:
    from notifyctl.intake.campaigns import Campaign
    from notifyctl.intake.validate import ValidationReport


@dataclass
class Started:
    """A run that was scheduled rather than started."""

    run_id: str
    state: RunState
    send_at: str | None


def audience_source(
    path: Path, plan: Callable[[Recipient], PlanItem], start_offset: int, start_line: int, skip_lines: set[int]
) -> Iterator[PlanBatch]:
    """The audience file's rows from a byte offset on, planned in batches that carry the cursor."""
    items: list[PlanItem] = []
    cursor = (start_offset, start_line)
    from notifyctl.intake import audience  # here: a one-off send needs no parsers

    for parsed in audience.iter_recipients(
        path, start_offset=start_offset, start_line=start_line, skip_lines=skip_lines
    ):
        cursor = (parsed.end_offset, parsed.end_line or parsed.line)
        if parsed.value is None:
            continue  # rejected rows were reported before the run started (--skip-invalid)
        items.append(plan(parsed.value))
        if len(items) >= PLAN_BATCH:
            yield PlanBatch(items, cursor, last=False)
            items = []
    yield PlanBatch(items, cursor, last=True)


def recipient_planner(
    template: Template, category: str, event_id: str, channels: list[str]
) -> Callable[[Recipient], PlanItem]:
    """What one audience row becomes: a plan item of the campaign's template, category and channels."""

    def plan(r: Recipient) -> PlanItem:
        return PlanItem(
            line=r.line,
            end_offset=0,
            template=template.name,
            template_version=template.version,
            category=category,
            event_id=event_id,
            channels=channels,
            user_id=r.user_id,
            email=r.email,
            phone=r.phone,
            locale=r.locale,
            timezone=r.timezone,
            push_tokens=r.push_tokens,
            identity=r.identity(),
            data=r.data,
        )

    return plan


def prepare_broadcast(
    ctx: Context, campaign: Campaign, audience_path: Path | None, skip_invalid: bool
) -> tuple[Template, list[str], str, Path, ValidationReport]:
    """Everything checked before anything is written: template, channels, every audience row."""
    template = ctx.templates.get(campaign.template)
    channels = channels_for(template, campaign.channels, ctx.settings)
    category = category_for(ctx.settings, template, campaign.category, channels)
    path = audience_path or campaign.audience_path()
    if path is None:
        raise InputError("the campaign names no audience file; give one with --audience FILE")
    if not path.is_file():
        raise InputError(f"audience file not found: {path}")
    from notifyctl.intake.validate import validate_audience  # here: a one-off send needs no parsers

    report = validate_audience(path)
    if report.error_count and not skip_invalid:
        raise InputError(
            f"{path}: {report.error_count} invalid row(s); nothing was sent "
            "(fix them, or pass --skip-invalid to send to the valid rows only)",
            report.errors,
        )
    if not report.rows:  # a header and nothing else: most likely an export that went wrong
        raise InputError(f"{path}: the audience has no rows, nobody to send to; nothing was sent")
    if not report.valid:
        raise InputError(f"{path}: no valid row in the audience; nothing was sent", report.errors)
    check_template(ctx, template, channels, report.columns, campaign.data)
    return template, channels, category, path, report


async def broadcast(
    ctx: Context,
    campaign: Campaign,
    *,
    audience_path: Path | None = None,
    dry_run: bool = False,
    skip_invalid: bool = False,
    progress: Progress | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> RunOutcome | DryRun | Started:
    """Check, then plan and send a campaign (or schedule it, or only say what it would do)."""
    template, channels, category, path, report = prepare_broadcast(ctx, campaign, audience_path, skip_invalid)
    plan = recipient_planner(template, category, campaign.id, channels)
    skip_lines = set(report.duplicate_lines)
    if dry_run:
        return await dry_plan(
            ctx,
            template.name,
            template.version,
            category,
            channels,
            audience_source(path, plan, 0, 0, skip_lines),
            report.errors,
        )
    now = ctx.clock()
    scheduled = campaign.send_at is not None and campaign.send_at > now
    run_id = runs.new_run_id("run")
    runs.create_run(
        ctx.conn,
        run_id=run_id,
        kind="broadcast",
        template=template.name,
        template_version=template.version,
        category=category,
        channels=channels,
        state=RunState.scheduled if scheduled else RunState.running,
        data=campaign.data,
        campaign_id=campaign.id,
        audience_path=str(path.resolve()),
        audience_sha256=report.sha256,
        send_at=iso(campaign.send_at) if campaign.send_at else None,
        options={**rejected_summary(report.errors, report.error_count), "duplicate_lines": sorted(skip_lines)},
    )
    if scheduled:
        return Started(run_id, RunState.scheduled, iso(campaign.send_at) if campaign.send_at else None)
    return await drive(ctx, run_id, audience_source(path, plan, 0, 0, skip_lines), progress, on_engine)
