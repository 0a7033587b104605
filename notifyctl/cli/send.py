"""`notifyctl send`: one notification (or a stream of events), waited for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from notifyctl.cli.common import (
    JsonOpt,
    RedisOpt,
    guarded,
    machine_output,
    open_context,
    report_dry_run,
    report_outcome,
    run_async,
)
from notifyctl.errors import InputError


def register(app: typer.Typer) -> None:
    """Add `send` to the notifyctl command."""
    app.command()(send)


@guarded
def send(
    cli: typer.Context,
    template: Annotated[str | None, typer.Option("--template", "-t", help="Template name.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="User id.")] = None,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="Channel (repeatable); default: the template's channels.")
    ] = None,
    data: Annotated[str | None, typer.Option(help="JSON object, @file.json, or @- for standard input.")] = None,
    event_id: Annotated[str | None, typer.Option(help="Logical event id: the same one is sent once.")] = None,
    category: Annotated[str | None, typer.Option(help="Override the template's category.")] = None,
    events: Annotated[
        str | None, typer.Option(help="JSON lines of NotificationRequested events, or - for standard input.")
    ] = None,
    skip_invalid: Annotated[bool, typer.Option(help="With --events: send the valid events, report the rest.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Decide everything, send and record nothing.")] = False,
    redis: RedisOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send one notification (or a stream of events) and wait for the outcome.

    Example: notifyctl send -t order_shipped -u u-1001 --channel email --data '{"order_id": "A-1"}'
    """
    from notifyctl.app import send as sending
    from notifyctl.app.audit import run_deliveries
    from notifyctl.app.checks import read_data
    from notifyctl.app.dry_run import DryRun
    from notifyctl.app.stdin import input_file
    from notifyctl.cli.progress import ChannelProgress, progress_wanted

    machine = machine_output(json_out)
    deliveries: list[dict[str, Any]] | None = None
    with open_context(cli, redis, "create") as ctx, ChannelProgress(enabled=progress_wanted(json_out)) as progress:
        if events is not None:
            if template or user:
                raise InputError("--events cannot be combined with --template/--user")
            if events == "-" and data == "@-":
                raise InputError("--events - and --data @- cannot both read standard input")
            if events != "-" and not Path(events).is_file():
                raise InputError(f"events file not found: {events}")
            # A copy of standard input stays under the state directory until the run has planned it all.
            with input_file(ctx.settings, ctx.conn, Path(events)) as path:
                result = run_async(
                    sending.send_events(ctx, path, skip_invalid=skip_invalid, dry_run=dry_run, progress=progress)
                )
        else:
            if not template or not user:
                raise InputError("give --template and --user (or --events FILE)")
            result = run_async(
                sending.send(
                    ctx,
                    template_name=template,
                    user_id=user,
                    channels=channel,
                    data=read_data(data),
                    event_id=event_id,
                    category=category,
                    dry_run=dry_run,
                    progress=progress,
                )
            )
            if not isinstance(result, DryRun):
                deliveries = run_deliveries(ctx, result.run_id)
    if isinstance(result, DryRun):
        report_dry_run(result, machine)
    else:
        report_outcome(result, machine, "send", deliveries)
