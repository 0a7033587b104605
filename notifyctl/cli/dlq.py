"""`notifyctl dlq list | show | redrive | purge`: dead letters."""

from __future__ import annotations

from typing import Annotated

import typer

from notifyctl.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    JsonOpt,
    RedisOpt,
    context,
    guarded,
    machine_output,
    open_context,
    report_outcome,
    run_async,
)
from notifyctl.errors import InputError

dlq_app = typer.Typer(
    help="Dead letters: inspect, re-drive, purge.\n\nExample: notifyctl dlq redrive --run RUN_ID", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the `dlq` group to the notifyctl command."""
    app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
@guarded
def dlq_list(
    cli: typer.Context,
    run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    error_class: Annotated[str | None, typer.Option("--error", help="Only this error class.")] = None,
    since: Annotated[str | None, typer.Option(help="Only since this ISO time.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List dead letters.

    Example: notifyctl dlq list --run run_20261121_ab12cd --error TransientError
    """
    from notifyctl.app.dlq import dead_letters
    from notifyctl.cli import output

    with context(cli) as ctx:
        rows = dead_letters(ctx, run_id=run, channel=channel, error_class=error_class, since=since)
    if output.wants_json(json_out):
        output.emit_json(rows)
        return
    redriven = any(r["redriven_at"] for r in rows)
    output.table(
        "dead letters",
        ["delivery", "run", "channel", "tries", "created", *(["redriven"] if redriven else []), "error"],
        [
            (
                r["delivery_id"],
                r["run_id"],
                r["channel"],
                r["attempts"],
                output.when(r["created"]),
                *([output.when(r["redriven_at"])] if redriven else []),
                output.one_line(f"{r['error_class']}: {r['error_message'] or ''}", 200),
            )
            for r in rows
        ],
        caption="the whole error, the address and every attempt: notifyctl dlq show DELIVERY" if rows else None,
        cut=("error",),
    )


@dlq_app.command("show")
@guarded
def dlq_show(cli: typer.Context, delivery_id: int, json_out: JsonOpt = False) -> None:
    """One dead letter: envelope, error and every attempt.

    Example: notifyctl dlq show 1234
    """
    from notifyctl.app.dlq import dead_letter
    from notifyctl.cli import output

    with context(cli) as ctx:
        item = dead_letter(ctx, delivery_id)
    if output.wants_json(json_out):
        output.emit_json(item)
        return
    output.table(
        f"dead letter {delivery_id}",
        ["field", "value"],
        [(k, v) for k, v in item.items() if k not in ("attempts", "envelope")],
    )
    output.table(
        "attempts",
        ["#", "started", "outcome", "provider", "code", "latency ms", "message"],
        [
            (
                a["number"],
                output.when(a["started"]),
                a["outcome"],
                a["provider"],
                a["code"],
                round(a["latency_ms"] or 0, 1),
                a["message"],
            )
            for a in item["attempts"]
        ],
    )
    output.console.print_json(data=item["envelope"])


@dlq_app.command("redrive")
@guarded
def dlq_redrive(
    cli: typer.Context,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Delivery id (repeatable).")] = None,
    run: Annotated[str | None, typer.Option(help="Every dead letter of this run.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    in_doubt: Annotated[bool, typer.Option(help="Re-drive deliveries held in doubt (crash, unknown outcome).")] = False,
    force: Annotated[bool, typer.Option(help="Also those older than the idempotency window.")] = False,
    rate: Annotated[float | None, typer.Option(help="At most N messages per second.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be re-driven.")] = False,
    redis: RedisOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send dead letters again, re-checking suppressions, preferences, quiet hours and idempotency.
    With --redis, through the cluster's workers.

    Example: notifyctl dlq redrive --run run_20261121_ab12cd --rate 10
    """
    from notifyctl.app import redrive as redriving
    from notifyctl.cli import output
    from notifyctl.cli.progress import ChannelProgress, progress_wanted

    machine = machine_output(json_out)
    with open_context(cli, redis) as ctx:
        plan = redriving.select_for_redrive(ctx, ids=ids, run_id=run, all_=all_, in_doubt=in_doubt, force=force)
        for delivery_id, why in plan.refused:
            output.error(f"delivery {delivery_id}: {why}")
        if dry_run or not plan.delivery_ids:
            if machine:
                output.emit_json({"would_redrive": plan.delivery_ids, "refused": plan.refused})
            else:
                output.console.print(
                    f"{len(plan.delivery_ids)} deliveries would be re-driven" if dry_run else "nothing to re-drive"
                )
            raise typer.Exit(EXIT_FAILED if plan.refused else EXIT_OK)
        with ChannelProgress(enabled=progress_wanted(json_out)) as progress:
            result = run_async(redriving.redrive(ctx, plan, rate=rate, progress=progress))
    assert result is not None
    if plan.refused and not machine:
        output.console.print(f"[yellow]{len(plan.refused)} refused[/] (see above)")
    report_outcome(result, machine, "redrive")
    if plan.refused:
        raise typer.Exit(EXIT_FAILED)


@dlq_app.command("purge")
@guarded
def dlq_purge(
    cli: typer.Context,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Delivery id (repeatable).")] = None,
    run: Annotated[str | None, typer.Option(help="Every dead letter of this run.")] = None,
    before: Annotated[str | None, typer.Option(help="Older than this ISO time.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
) -> None:
    """Delete dead letters (the deliveries stay in the audit as dead).

    Example: notifyctl dlq purge --before 2026-10-01
    """
    from datetime import UTC, datetime

    from notifyctl.app.dlq import purge_dead_letters
    from notifyctl.cli import output

    cutoff = None
    if before:
        try:
            cutoff = datetime.fromisoformat(before)
        except ValueError as exc:
            raise InputError(f"--before: not an ISO date/time: {before}") from exc
        cutoff = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    with context(cli) as ctx:
        n = purge_dead_letters(ctx, ids=ids, run_id=run, before=cutoff, all_=all_)
    output.console.print(f"purged {n} dead letter(s)")
