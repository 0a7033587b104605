"""`notifyctl prefs set | show`: preferences per user × channel × category."""

from __future__ import annotations

from typing import Annotated

import typer

from notifyctl.cli.common import JsonOpt, context, guarded

prefs_app = typer.Typer(
    help="Preferences per user × channel × category.\n\n"
    "Example: notifyctl prefs set u1 --channel sms --category marketing --off",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `prefs` group to the notifyctl command."""
    app.add_typer(prefs_app, name="prefs")


@prefs_app.command("set")
@guarded
def prefs_set(
    cli: typer.Context,
    user_id: str,
    channel: Annotated[str, typer.Option(help="email, sms, push, inapp or webhook.")],
    category: Annotated[str, typer.Option(help="A category the settings define, or * for all.")],
    on: Annotated[bool, typer.Option("--on/--off", help="Opt in (--on) or out (--off).")] = True,
) -> None:
    """Opt a user in or out of a category on a channel.

    Example: notifyctl prefs set u-1001 --channel sms --category marketing --off
    """
    from notifyctl.app.directory import set_preference
    from notifyctl.cli import output

    with context(cli) as ctx:
        set_preference(ctx, user_id, channel, category, on)
    output.console.print(f"{user_id}: {channel}/{category} {'on' if on else 'off'}")


@prefs_app.command("show")
@guarded
def prefs_show(cli: typer.Context, user_id: str, json_out: JsonOpt = False) -> None:
    """Show a user's preferences.

    Example: notifyctl prefs show u-1001 --json
    """
    from notifyctl.app.directory import preferences
    from notifyctl.cli import output

    with context(cli) as ctx:
        prefs = preferences(ctx, user_id)
    if output.wants_json(json_out):
        output.emit_json(prefs)
    else:
        output.table(
            f"preferences of {user_id}",
            ["channel", "category", "enabled", "source", "updated"],
            [(p["channel"], p["category"], "on" if p["enabled"] else "off", p["source"], p["updated"]) for p in prefs],
        )
