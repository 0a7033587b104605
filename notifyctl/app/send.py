"""Send one notification to one user, or a stream of NotificationRequested events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from notifyctl.app.checks import category_for, channels_for, check_render, file_sha256, rejected_summary
from notifyctl.app.context import Context
from notifyctl.app.drive import drive
from notifyctl.app.dry_run import DryRun, dry_plan
from notifyctl.errors import InputError, NotFound, RowError, TemplateError
from notifyctl.models import RunState
from notifyctl.pipeline.engine import PlanBatch, Progress, RunOutcome
from notifyctl.pipeline.planner import PLAN_BATCH, PlanItem
from notifyctl.store import directory, runs


def _single_source(items: list[PlanItem]) -> Iterator[PlanBatch]:
    return iter([PlanBatch(items, None, last=True)])


async def send(
    ctx: Context,
    *,
    template_name: str,
    user_id: str,
    channels: list[str] | None,
    data: dict[str, Any],
    event_id: str | None,
    category: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RunOutcome | DryRun:
    """One template to one known user, rendered once up front, then sent and waited for."""
    template = ctx.templates.get(template_name)
    channels = channels_for(template, channels, ctx.settings)
    category = category_for(ctx.settings, template, category, channels)
    user = directory.get_user(ctx.conn, user_id)
    if user is None:
        raise NotFound(f"unknown user '{user_id}' (import it with `notifyctl users import`)")
    check_render(ctx, template, channels, user, data)
    item = PlanItem(
        line=1,
        end_offset=0,
        template=template.name,
        template_version=template.version,
        category=category,
        event_id=event_id or f"send:{uuid.uuid4().hex}",
        channels=channels,
        user_id=user_id,
        data=data,
    )
    if dry_run:
        return await dry_plan(ctx, template.name, template.version, category, channels, _single_source([item]), [])
    run_id = runs.new_run_id("send")
    runs.create_run(
        ctx.conn,
        run_id=run_id,
        kind="send",
        template=template.name,
        template_version=template.version,
        category=category,
        channels=channels,
        state=RunState.running,
        options={"event_id": item.event_id},
    )
    return await drive(ctx, run_id, _single_source([item]), progress, None)


def _event_items(
    ctx: Context, path: Path, start_offset: int, start_line: int, skip_invalid: bool
) -> Iterator[tuple[PlanItem | None, RowError | None, tuple[int, int]]]:
    from notifyctl.intake.events import iter_events  # here: a one-off send needs no parsers

    for parsed in iter_events(path, start_offset=start_offset, start_line=start_line):
        cursor = (parsed.end_offset, parsed.end_line or parsed.line)
        if parsed.value is None:
            yield None, parsed.error, cursor
            continue
        event = parsed.value
        try:
            template = ctx.templates.get(event.template)
            channels = channels_for(template, event.channels, ctx.settings)
            category = category_for(ctx.settings, template, event.category, channels)
        except (TemplateError, InputError) as exc:
            yield None, RowError(parsed.line, str(exc), "template"), cursor
            continue
        yield (
            PlanItem(
                line=parsed.line,
                end_offset=parsed.end_offset,
                template=template.name,
                template_version=template.version,
                category=category,
                event_id=event.event_id,
                channels=channels,
                user_id=event.user_id,
                data=event.data,
            ),
            None,
            cursor,
        )


def events_source(ctx: Context, path: Path, start_offset: int, start_line: int) -> Iterator[PlanBatch]:
    """The events file's valid events from a byte offset on, planned in batches that carry the cursor."""
    items: list[PlanItem] = []
    cursor = (start_offset, start_line)
    for item, _error, cursor in _event_items(ctx, path, start_offset, start_line, True):
        if item is not None:
            items.append(item)
        if len(items) >= PLAN_BATCH:
            yield PlanBatch(items, cursor, last=False)
            items = []
    yield PlanBatch(items, cursor, last=True)


async def send_events(
    ctx: Context, path: Path, *, skip_invalid: bool = False, dry_run: bool = False, progress: Progress | None = None
) -> RunOutcome | DryRun:
    """A stream of NotificationRequested events (JSON lines), validated whole before the first send."""
    errors: list[RowError] = []
    count = 0
    for _item, error, _cursor in _event_items(ctx, path, 0, 0, skip_invalid):
        if error is not None:
            count += 1
            if len(errors) < 1000:
                errors.append(error)
    if count and not skip_invalid:
        raise InputError(
            f"{path}: {count} invalid event(s); nothing was sent "
            "(fix them, or pass --skip-invalid to send the valid ones only)",
            errors,
        )
    if dry_run:
        return await dry_plan(ctx, "(events)", "-", "-", [], events_source(ctx, path, 0, 0), errors)
    run_id = runs.new_run_id("events")
    runs.create_run(
        ctx.conn,
        run_id=run_id,
        kind="events",
        template="(events)",
        template_version="-",
        category="-",
        channels=sorted(ctx.settings.channels),
        state=RunState.running,
        audience_path=str(path.resolve()),
        audience_sha256=file_sha256(path),
        options=rejected_summary(errors, count),
    )
    return await drive(ctx, run_id, events_source(ctx, path, 0, 0), progress, None)
