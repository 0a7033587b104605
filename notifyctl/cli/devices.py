"""`notifyctl devices prune`: push tokens nobody has registered again for months."""

from __future__ import annotations

from typing import Annotated

import typer

from notifyctl.cli.common import JsonOpt, context, guarded

devices_app = typer.Typer(
    help="Users' push tokens.\n\nExample: notifyctl devices prune --older-than 270d --dry-run", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the `devices` group to the notifyctl command."""
    app.add_typer(devices_app, name="devices")


@devices_app.command("prune")
@guarded
def devices_prune(
    cli: typer.Context,
    older_than: Annotated[
        str, typer.Option(help="Remove tokens not registered again for this long: 270d (days), 40w, 12h.")
    ] = "270d",
    dry_run: Annotated[bool, typer.Option(help="Only count them; remove nothing.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove push tokens that no app has registered again for a long time (audited).

    Example: notifyctl devices prune --older-than 270d --dry-run
    """
    from notifyctl.app.devices import parse_age, prune
    from notifyctl.cli import output

    age = parse_age(older_than)
    with context(cli) as ctx:
        pruned = prune(ctx, age, dry_run=dry_run)
    if output.wants_json(json_out):
        removed = 0 if pruned.dry_run else pruned.count
        output.emit_json(
            {"stale": pruned.count, "removed": removed, "seen_before": pruned.seen_before, "dry_run": pruned.dry_run}
        )
        return
    verb = "would remove" if dry_run else "removed"
    output.console.print(f"{verb} {pruned.count} push token(s) last registered before {pruned.seen_before}")
