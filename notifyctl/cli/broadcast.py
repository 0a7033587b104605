"""`notifyctl broadcast`: a campaign to an audience file, with a progress bar per channel."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from notifyctl.pipeline.engine import Engine


def register(app: typer.Typer) -> None:
    """Add `broadcast` to the notifyctl command."""
    app.command()(broadcast)


@guarded
def broadcast(
    cli: typer.Context,
    campaign: Annotated[Path, typer.Argument(help="Campaign file (TOML); - for standard input.")],
    audience: Annotated[
        Path | None, typer.Option(help="Audience file (overrides the campaign's); - for standard input.")
    ] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Send to the valid rows, report the invalid ones.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Decide everything, send and record nothing.")] = False,
    redis: RedisOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send a campaign to an audience file, with a progress bar per channel.

    Example: notifyctl broadcast campaigns/welcome.toml --audience users-2026-11.csv
    """
    from notifyctl.app import broadcast as broadcasting
    from notifyctl.app.dry_run import DryRun
    from notifyctl.app.stdin import input_file, is_stdin
    from notifyctl.cli import output
    from notifyctl.cli.progress import ChannelProgress, progress_wanted
    from notifyctl.intake.campaigns import load_campaign

    machine = machine_output(json_out)
    engines: list[Engine] = []
    if is_stdin(campaign) and is_stdin(audience):
        raise InputError("the campaign and --audience cannot both be standard input")
    loaded = load_campaign(campaign)
    # A copy of standard input stays under the state directory until the run has planned it all.
    with (
        open_context(cli, redis, "create") as ctx,
        ChannelProgress(enabled=progress_wanted(json_out)) as progress,
        input_file(ctx.settings, ctx.conn, audience) if audience else nullcontext(None) as audience_path,
    ):
        result = run_async(
            broadcasting.broadcast(
                ctx,
                loaded,
                audience_path=audience_path,
                dry_run=dry_run,
                skip_invalid=skip_invalid,
                progress=progress,
                on_engine=engines.append,
            ),
            engines,
        )
    if isinstance(result, DryRun):
        report_dry_run(result, machine)
    elif isinstance(result, broadcasting.Started):
        if machine:
            output.emit_json({"run_id": result.run_id, "state": result.state, "send_at": result.send_at})
        else:
            output.console.print(
                f"run {result.run_id} scheduled for {result.send_at}; "
                "`notifyctl resume --due` (from cron) starts it then"
            )
    else:
        report_outcome(result, machine, "broadcast")
