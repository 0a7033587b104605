"""What the commands do, as library calls: broadcast, send, resume, redrive.

The CLI parses arguments, calls one of these and draws the result; nothing here prints.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notifyctl.backends import processes as shards
from notifyctl.backends.local import LocalBackend
from notifyctl.errors import InputError, PolicyRefused, RowError, TemplateError
from notifyctl.models import Recipient, User
from notifyctl.pipeline.engine import Backend, Engine, PlanBatch, Progress, RunOutcome, utc_clock
from notifyctl.pipeline.planner import PLAN_BATCH, PlanItem, Planner
from notifyctl.settings import Settings
from notifyctl.store import directory, runs
from notifyctl.store.db import connect, iso, loads, parse_iso, record_event, transaction
from notifyctl.templates.store import TemplateStore
from notifyctl.templates.template import BUILTIN_VARIABLES, Template

if TYPE_CHECKING:
    from notifyctl.backends.redis.coordinator import ClusterOptions
    from notifyctl.intake.campaigns import Campaign
    from notifyctl.intake.validate import ValidationReport

Clock = Callable[[], datetime]


@dataclass
class Context:
    """Everything a command needs, opened once."""

    settings: Settings
    conn: sqlite3.Connection
    templates: TemplateStore
    clock: Clock = utc_clock
    cluster: ClusterOptions | None = None  # runs go to Redis workers

    @classmethod
    def open(cls, settings: Settings, clock: Clock = utc_clock, cluster: ClusterOptions | None = None) -> Context:
        templates = TemplateStore(settings.templates_path, render_timeout_s=settings.render_timeout_s)
        return cls(settings, connect(settings.database_path), templates, clock, cluster)

    def engine(self, progress: Progress | None = None, backend: Backend | None = None) -> Engine:
        """An engine for this context: on the embedded backend, or on Redis workers with `cluster`."""
        idempotency = None
        if backend is None and self.cluster is not None:
            from notifyctl.backends.redis.coordinator import RedisBackend, redis_idempotency

            backend = RedisBackend(self.cluster)
            idempotency = redis_idempotency(self.settings, self.cluster)
        backend = backend or LocalBackend()
        return Engine(
            self.settings,
            self.conn,
            self.templates,
            clock=self.clock,
            progress=progress,
            backend=backend,
            idempotency=idempotency,
        )


@dataclass
class DryRun:
    """What a run would do: counts per channel and state, and skip reasons."""

    counts: dict[str, dict[str, int]]
    reasons: dict[str, int]
    rejected: list[RowError] = field(default_factory=list)


@dataclass
class Started:
    """A run that was scheduled rather than started."""

    run_id: str
    state: str
    send_at: str | None


def file_sha256(path: Path) -> str:
    """The whole file's hash: an interrupted plan resumes only from the very same input."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- shared checks ------------------------------------------------------------------------------


def channels_for(template: Template, requested: list[str] | None, settings: Settings) -> list[str]:
    if not requested:
        # Default: the template's channels that have a provider here.
        channels = [c for c in template.channels if c in settings.channels]
        if not channels:
            raise InputError(
                f"none of template '{template.name}'s channels ({', '.join(template.channels)}) "
                f"has a provider configured in {settings.source}"
            )
        return channels
    channels = list(requested)
    for channel in channels:
        if channel not in template.channels:
            raise InputError(
                f"template '{template.name}' has no '{channel}' part (it has: {', '.join(template.channels)})"
            )
        if channel not in settings.channels:
            raise InputError(
                f"no provider is configured for channel '{channel}' (add [channels.{channel}] to {settings.source})"
            )
    return channels


def _check_template(
    ctx: Context, template: Template, channels: list[str], columns: set[str], data: dict[str, Any]
) -> None:
    available = set(columns) | set(data) | directory.user_attribute_keys(ctx.conn) | set(BUILTIN_VARIABLES)
    problems = template.check_variables(available, channels)
    if problems:
        raise TemplateError("; ".join(problems), template=template.name)


def _rejected(errors: list[RowError], count: int) -> dict[str, Any]:
    return {"rejected_count": count, "rejected": [[e.line, e.field, e.reason] for e in errors[:100]]}


# --- broadcast ----------------------------------------------------------------------------------


def _audience_source(
    path: Path, plan: Callable[[Recipient], PlanItem], start_offset: int, start_line: int, skip_lines: set[int]
) -> Iterator[PlanBatch]:
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


def _recipient_planner(
    template: Template, category: str, event_id: str, channels: list[str]
) -> Callable[[Recipient], PlanItem]:
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
    category = campaign.category or template.category
    path = audience_path or campaign.audience_path()
    if path is None:
        raise InputError("the campaign names no audience file; give one with --audience FILE")
    if not path.is_file():
        raise InputError(f"audience file not found: {path}")
    from notifyctl.intake import validate as audience  # here: a one-off send needs no parsers

    report = audience.validate_audience(path)
    if report.error_count and not skip_invalid:
        raise InputError(
            f"{path}: {report.error_count} invalid row(s); nothing was sent "
            "(fix them, or pass --skip-invalid to send to the valid rows only)",
            report.errors,
        )
    _check_template(ctx, template, channels, report.columns, campaign.data)
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
    template, channels, category, path, report = prepare_broadcast(ctx, campaign, audience_path, skip_invalid)
    plan = _recipient_planner(template, category, campaign.id, channels)
    skip_lines = set(report.duplicate_lines)
    if dry_run:
        return await _dry_run(
            ctx,
            template.name,
            template.version,
            category,
            channels,
            _audience_source(path, plan, 0, 0, skip_lines),
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
        state="scheduled" if scheduled else "running",
        data=campaign.data,
        campaign_id=campaign.id,
        audience_path=str(path.resolve()),
        audience_sha256=report.sha256,
        send_at=iso(campaign.send_at) if campaign.send_at else None,
        options={**_rejected(report.errors, report.error_count), "duplicate_lines": sorted(skip_lines)},
    )
    if scheduled:
        return Started(run_id, "scheduled", iso(campaign.send_at) if campaign.send_at else None)
    return await _drive(ctx, run_id, _audience_source(path, plan, 0, 0, skip_lines), progress, on_engine)


async def _drive(
    ctx: Context,
    run_id: str,
    source: Iterator[PlanBatch] | None,
    progress: Progress | None,
    on_engine: Callable[[Engine], None] | None,
    allow_template_change: bool = False,
) -> RunOutcome:
    lock = f"run:{run_id}"
    if not runs.acquire_lock(ctx.conn, lock, owner="notifyctl"):
        raise PolicyRefused(f"run {run_id} is being worked on by another notifyctl process")
    try:
        engine = await _engine_for(ctx, run_id, progress, allow_template_change)
        if on_engine:
            on_engine(engine)
        return await engine.run(run_id, source, allow_template_change=allow_template_change)
    finally:
        runs.release_lock(ctx.conn, lock)


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
    expected = sum(by_state.get("pending", 0) for by_state in runs.counts(ctx.conn, run.run_id).values())
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


async def _dry_run(
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
    ctx.conn.execute("BEGIN IMMEDIATE")
    try:
        runs.create_run(
            ctx.conn,
            run_id=run_id,
            kind="dry-run",
            template=template,
            template_version=version,
            category=category,
            channels=channels,
            state="running",
        )
        for batch in source:
            planner.plan_batch(run_id, batch.items)
        result = DryRun(runs.counts(ctx.conn, run_id), runs.reasons(ctx.conn, run_id), rejected)
    finally:
        ctx.conn.execute("ROLLBACK")
    return result


# --- send ---------------------------------------------------------------------------------------


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
    template = ctx.templates.get(template_name)
    channels = channels_for(template, channels, ctx.settings)
    user = directory.get_user(ctx.conn, user_id)
    if user is None:
        raise InputError(f"unknown user '{user_id}' (import it with `notifyctl users import`)")
    check_render(ctx, template, channels, user, data)
    category = category or template.category
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
        return await _dry_run(ctx, template.name, template.version, category, channels, _single_source([item]), [])
    run_id = runs.new_run_id("send")
    runs.create_run(
        ctx.conn,
        run_id=run_id,
        kind="send",
        template=template.name,
        template_version=template.version,
        category=category,
        channels=channels,
        state="running",
        options={"event_id": item.event_id},
    )
    return await _drive(ctx, run_id, _single_source([item]), progress, None)


def check_render(ctx: Context, template: Template, channels: list[str], user: User, data: dict[str, Any]) -> None:
    """A one-off send renders every part once up front: a template error is bad input, not a dead letter."""
    context: dict[str, Any] = {name: "" for name in BUILTIN_VARIABLES}
    context.update(user.attributes)
    context.update(user_id=user.user_id, email=user.email, phone=user.phone, locale=user.locale)
    context.update(data)
    for channel in channels:
        template.render(channel, user.locale, context)


def _event_items(
    ctx: Context, path: Path, start_offset: int, start_line: int, skip_invalid: bool
) -> Iterator[tuple[PlanItem | None, RowError | None, tuple[int, int]]]:
    from notifyctl.intake import events as audience  # here: a one-off send needs no parsers

    for parsed in audience.iter_events(path, start_offset=start_offset, start_line=start_line):
        cursor = (parsed.end_offset, parsed.end_line or parsed.line)
        if parsed.value is None:
            yield None, parsed.error, cursor
            continue
        event = parsed.value
        try:
            template = ctx.templates.get(event.template)
            channels = channels_for(template, event.channels, ctx.settings)
        except (TemplateError, InputError) as exc:
            yield None, RowError(parsed.line, str(exc), "template"), cursor
            continue
        yield (
            PlanItem(
                line=parsed.line,
                end_offset=parsed.end_offset,
                template=template.name,
                template_version=template.version,
                category=event.category or template.category,
                event_id=event.event_id,
                channels=channels,
                user_id=event.user_id,
                data=event.data,
            ),
            None,
            cursor,
        )


def _events_source(ctx: Context, path: Path, start_offset: int, start_line: int) -> Iterator[PlanBatch]:
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
        return await _dry_run(ctx, "(events)", "-", "-", [], _events_source(ctx, path, 0, 0), errors)
    run_id = runs.new_run_id("events")
    runs.create_run(
        ctx.conn,
        run_id=run_id,
        kind="events",
        template="(events)",
        template_version="-",
        category="-",
        channels=sorted(ctx.settings.channels),
        state="running",
        audience_path=str(path.resolve()),
        audience_sha256=file_sha256(path),
        options=_rejected(errors, count),
    )
    return await _drive(ctx, run_id, _events_source(ctx, path, 0, 0), progress, None)


# --- resume -------------------------------------------------------------------------------------


def _template_changes(ctx: Context, run: runs.Run) -> list[str]:
    changed = []
    pinned = {
        (t, v)
        for t, v in ctx.conn.execute(
            """SELECT DISTINCT template, template_version FROM deliveries
           WHERE run_id=? AND state IN ('pending', 'inflight', 'deferred')""",
            (run.run_id,),
        )
    }
    if not run.planned and run.kind == "broadcast":
        pinned.add((run.template, run.template_version))
    for name, version in sorted(pinned):
        current = ctx.templates.get(name).version
        if current != version:
            changed.append(f"{name} (run pinned {version}, now {current})")
    return changed


def _resume_source(ctx: Context, run: runs.Run) -> Iterator[PlanBatch] | None:
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
        return _events_source(ctx, path, run.plan_offset, run.plan_line)
    template = ctx.templates.get(run.template)
    plan = _recipient_planner(template, run.category, run.campaign_id or run.run_id, run.channels)
    return _audience_source(path, plan, run.plan_offset, run.plan_line, set(run.options.get("duplicate_lines", [])))


@dataclass
class ResumeSkipped:
    run_id: str
    why: str


async def resume(
    ctx: Context,
    run_id: str,
    *,
    allow_template_change: bool = False,
    progress: Progress | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> RunOutcome | ResumeSkipped:
    run = runs.get_run(ctx.conn, run_id)
    if run is None:
        raise InputError(f"unknown run '{run_id}' (see `notifyctl runs list`)")
    lock = f"run:{run_id}"
    if not runs.acquire_lock(ctx.conn, lock, owner="resume"):
        return ResumeSkipped(run_id, "another notifyctl process is working on this run")
    try:
        if run.state in ("completed", "completed_with_failures") and run.planned:
            return ResumeSkipped(
                run_id,
                f"run is {run.state}; nothing to resume "
                "(held deliveries: `notifyctl dlq redrive --run RUN --in-doubt`)",
            )
        changes = _template_changes(ctx, run)
        if changes and not allow_template_change:
            raise PolicyRefused(
                f"run {run_id}: template changed since the run started: {', '.join(changes)}; "
                "pass --allow-template-change to render the rest with the new version"
            )
        runs.release_due_deferred(ctx.conn, run_id, ctx.clock())
        source = _resume_source(ctx, run)
        engine = await _engine_for(ctx, run_id, progress, allow_template_change)
        if on_engine:
            on_engine(engine)
        return await engine.run(run_id, source, allow_template_change=allow_template_change)
    finally:
        runs.release_lock(ctx.conn, lock)


def due_runs(ctx: Context) -> list[str]:
    """Runs `resume --due` should work on now."""
    now = iso(ctx.clock())
    due: list[str] = []
    for row in ctx.conn.execute(
        """SELECT run_id, state, send_at FROM runs
           WHERE state IN ('interrupted', 'running', 'scheduled', 'waiting') ORDER BY created"""
    ):
        if row["state"] == "scheduled" and (row["send_at"] or "") > now:
            continue
        if row["state"] == "running" and runs.lock_holder_alive(ctx.conn, f"run:{row['run_id']}"):
            continue  # a live process is on it
        if (
            row["state"] == "waiting"
            and not ctx.conn.execute(
                "SELECT 1 FROM deliveries WHERE run_id=? AND state='deferred' AND defer_until<=? LIMIT 1",
                (row["run_id"], now),
            ).fetchone()
        ):
            continue
        due.append(row["run_id"])
    return due


# --- dead letters and redrive -------------------------------------------------------------------


@dataclass
class RedrivePlan:
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
    if in_doubt:
        sql = "SELECT id, idempotency_key, created FROM deliveries WHERE state='in_doubt'"
    else:
        sql = """SELECT d.id, d.idempotency_key, d.created FROM dead_letters l JOIN deliveries d ON d.id=l.delivery_id
                 WHERE l.redriven_at IS NULL"""
    params: list[Any] = []
    alias = "" if in_doubt else "d."
    if ids:
        sql += f" AND {alias}id IN ({','.join('?' * len(ids))})"
        params.extend(ids)
    elif run_id:
        sql += f" AND {alias}run_id=?"
        params.append(run_id)
    elif not all_:
        raise InputError("say which dead letters to redrive: --id ID, --run RUN or --all")
    window = timedelta(hours=ctx.settings.idempotency_window_hours)
    now = ctx.clock()
    chosen: list[int] = []
    refused: list[tuple[int, str]] = []
    for row in ctx.conn.execute(sql + f" ORDER BY {alias}id", params):
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
        refused.extend((i, "no such dead letter (or already redriven)") for i in ids if i not in found)
    return RedrivePlan(chosen, refused)


def create_redrive_run(ctx: Context, delivery_ids: list[int], *, rate: float | None = None) -> str:
    """A new run whose deliveries keep the originals' identity (idempotency key, message id); each
    carries its original run's shared data, since the redrive run has none of its own."""
    run_id = runs.new_run_id("redrive")
    now = iso(ctx.clock())
    channels = sorted(
        {
            r[0]
            for r in ctx.conn.execute(
                f"SELECT DISTINCT channel FROM deliveries WHERE id IN ({','.join('?' * len(delivery_ids))})",
                delivery_ids,
            )
        }
    )
    runs.create_run(
        ctx.conn,
        run_id=run_id,
        kind="redrive",
        template="(redrive)",
        template_version="-",
        category="-",
        channels=channels,
        state="running",
        options={"rate": rate, "redrive_of": len(delivery_ids)},
    )
    with transaction(ctx.conn):
        next_id = int(ctx.conn.execute("SELECT COALESCE(max(id), 0) FROM deliveries").fetchone()[0]) + 1
        for old_id in delivery_ids:
            old = runs.get_delivery(ctx.conn, old_id)
            assert old is not None
            template = ctx.templates.get(old["template"])
            ctx.conn.execute(
                """INSERT INTO deliveries (id, run_id, line, user_id, channel, address, idempotency_key, event_id,
                     template, template_version, category, locale, state, message_id, redrive_of, data,
                     created, updated)
                   SELECT ?, ?, d.line, d.user_id, d.channel, d.address, d.idempotency_key, d.event_id, d.template, ?,
                     d.category, d.locale, 'pending', d.message_id, d.id, json_patch(r.data, d.data), ?, ?
                   FROM deliveries d JOIN runs r ON r.run_id = d.run_id WHERE d.id=?""",
                (next_id, run_id, template.version, now, now, old_id),
            )
            ctx.conn.execute("UPDATE idempotency SET delivery_id=? WHERE key=?", (next_id, old["idempotency_key"]))
            ctx.conn.execute(
                "UPDATE dead_letters SET redriven_at=?, redrive_count=redrive_count+1 WHERE delivery_id=?",
                (now, old_id),
            )
            if old["state"] == "in_doubt":
                ctx.conn.execute("UPDATE deliveries SET reason='redriven', updated=? WHERE id=?", (now, old_id))
            next_id += 1
        ctx.conn.execute("UPDATE runs SET planned=1 WHERE run_id=?", (run_id,))
        record_event(ctx.conn, "redrive", run_id, {"deliveries": delivery_ids[:1000], "count": len(delivery_ids)})
    return run_id


async def redrive(
    ctx: Context, plan: RedrivePlan, *, rate: float | None = None, progress: Progress | None = None
) -> RunOutcome | None:
    if not plan.delivery_ids:
        return None
    run_id = create_redrive_run(ctx, plan.delivery_ids, rate=rate)
    if rate:
        for conf in ctx.settings.providers.values():
            conf.rate = min(conf.rate, rate)
            conf.burst = min(conf.burst or int(rate), max(1, int(rate)))
    return await _drive(ctx, run_id, None, progress, None, allow_template_change=True)


def purge_dead_letters(
    ctx: Context,
    *,
    ids: list[int] | None = None,
    run_id: str | None = None,
    before: datetime | None = None,
    all_: bool = False,
) -> int:
    sql = "DELETE FROM dead_letters WHERE 1=1"
    params: list[Any] = []
    if ids:
        sql += f" AND delivery_id IN ({','.join('?' * len(ids))})"
        params.extend(ids)
    if run_id:
        sql += " AND run_id=?"
        params.append(run_id)
    if before:
        sql += " AND created < ?"
        params.append(iso(before))
    if not (ids or run_id or before or all_):
        raise InputError("say which dead letters to purge: --id, --run, --before or --all")
    with transaction(ctx.conn):
        n = ctx.conn.execute(sql, params).rowcount
        record_event(ctx.conn, "dlq_purge", run_id, {"count": n})
    return n


def dead_letters(
    ctx: Context,
    *,
    run_id: str | None = None,
    channel: str | None = None,
    error_class: str | None = None,
    since: str | None = None,
) -> list[dict[str, Any]]:
    sql = """SELECT l.delivery_id, l.run_id, l.channel, d.address, d.user_id, l.error_class, l.error_message,
                    d.attempts, l.created, l.redriven_at, l.redrive_count
             FROM dead_letters l JOIN deliveries d ON d.id = l.delivery_id WHERE 1=1"""
    params: list[Any] = []
    for column, value in (("l.run_id", run_id), ("l.channel", channel), ("l.error_class", error_class)):
        if value:
            sql += f" AND {column}=?"
            params.append(value)
    if since:
        sql += " AND l.created >= ?"
        params.append(since)
    return [dict(r) for r in ctx.conn.execute(sql + " ORDER BY l.delivery_id", params)]


def dead_letter(ctx: Context, delivery_id: int) -> dict[str, Any]:
    row = ctx.conn.execute(
        """SELECT l.*, d.address, d.user_id, d.state, d.template, d.template_version, d.idempotency_key, d.message_id
           FROM dead_letters l JOIN deliveries d ON d.id = l.delivery_id WHERE l.delivery_id=?""",
        (delivery_id,),
    ).fetchone()
    if row is None:
        raise InputError(f"no dead letter for delivery {delivery_id} (see `notifyctl dlq list`)")
    item = dict(row)
    item["envelope"] = loads(item["envelope"])
    item["attempts"] = [
        dict(a)
        for a in ctx.conn.execute(
            "SELECT number, started, latency_ms, outcome, provider, code, message FROM attempts WHERE delivery_id=? "
            "ORDER BY number",
            (delivery_id,),
        )
    ]
    return item


AUDIT_COLUMNS = (
    "id",
    "run_id",
    "line",
    "user_id",
    "channel",
    "address",
    "event_id",
    "state",
    "reason",
    "defer_until",
    "provider",
    "provider_message_id",
    "message_id",
    "template",
    "template_version",
    "category",
    "attempts",
    "error_class",
    "error_message",
    "in_doubt",
    "redrive_of",
    "receipt_status",
    "created",
    "updated",
)


def audit_rows(
    ctx: Context, *, run_id: str | None = None, user_id: str | None = None, state: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM deliveries WHERE 1=1"
    params: list[Any] = []
    for column, value in (("run_id", run_id), ("user_id", user_id), ("state", state)):
        if value:
            sql += f" AND {column}=?"
            params.append(value)
    sql += " ORDER BY id"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    return [dict(r) for r in ctx.conn.execute(sql, params)]


def run_details(ctx: Context, run_id: str) -> dict[str, Any]:
    run = runs.get_run(ctx.conn, run_id)
    if run is None:
        raise InputError(f"unknown run '{run_id}' (see `notifyctl runs list`)")
    counts = runs.counts(ctx.conn, run_id)
    sent = sum(states.get("sent", 0) for states in counts.values())
    elapsed = None
    if run.started:
        end = parse_iso(run.finished) if run.finished else ctx.clock()
        elapsed = round((end - parse_iso(run.started)).total_seconds(), 3)
    errors = [
        list(r)
        for r in ctx.conn.execute(
            """SELECT error_class, substr(error_message, 1, 80), count(*) FROM deliveries
           WHERE run_id=? AND error_class IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20""",
            (run_id,),
        )
    ]
    requests = ctx.conn.execute(
        "SELECT count(*) FROM attempts a JOIN deliveries d ON d.id=a.delivery_id WHERE d.run_id=?", (run_id,)
    ).fetchone()[0]
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


@dataclass
class ImportResult:
    imported: int
    errors: list[RowError]
    error_count: int


def import_users(ctx: Context, path: Path, *, skip_invalid: bool = False, batch: int = 5000) -> ImportResult:
    """Read and validate the whole file once, staging the valid rows; then upsert them in batches
    of `batch`. Without --skip-invalid a bad row means nothing is written."""
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    from notifyctl.intake import users_import  # here: a one-off send needs no parsers

    with users_import.staged_users(path, batch=batch) as staged:
        count = staged.error_count
        if count and not skip_invalid:
            raise InputError(
                f"{path}: {count} invalid row(s); nothing was imported "
                "(fix them, or pass --skip-invalid to import the valid rows)",
                staged.errors,
            )
        imported = staged.write(ctx.conn)
    with transaction(ctx.conn):
        record_event(ctx.conn, "users_import", str(path), {"imported": imported, "rejected": count})
    return ImportResult(imported, staged.errors, count)


def now_utc() -> datetime:
    return datetime.now(UTC)
