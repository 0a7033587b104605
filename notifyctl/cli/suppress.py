"""`notifyctl suppress add | remove | list`: addresses that must never be contacted."""

from __future__ import annotations

from typing import Annotated

import typer

from notifyctl.cli.common import JsonOpt, context, guarded
from notifyctl.errors import NotFound

suppress_app = typer.Typer(
    help="Addresses that must never be contacted.\n\n"
    "Example: notifyctl suppress add email a@example.com --reason manual",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `suppress` group to the notifyctl command."""
    app.add_typer(suppress_app, name="suppress")


@suppress_app.command("add")
@guarded
def suppress_add(
    cli: typer.Context,
    channel: str,
    address: str,
    reason: Annotated[str, typer.Option(help="manual, unsubscribe, bounce, complaint or stop.")] = "manual",
) -> None:
    """Never contact an address on a channel again (addresses are normalised first). It holds before
    the next message everywhere, Redis workers included.

    Example: notifyctl suppress add sms "+1 415 555 2671" --reason stop
    """
    from notifyctl.app.directory import suppress
    from notifyctl.cli import output

    with context(cli, "create") as ctx:
        normalized = suppress(ctx, channel, address, reason)
    output.console.print(f"suppressed {channel} {output.mask_address(normalized)} ({reason})")


@suppress_app.command("remove")
@guarded
def suppress_remove(cli: typer.Context, channel: str, address: str) -> None:
    """Lift a suppression.

    Example: notifyctl suppress remove email a@example.com
    """
    from notifyctl.app.directory import lift_suppression
    from notifyctl.cli import output

    with context(cli) as ctx:
        removed = lift_suppression(ctx, channel, address)
    if not removed:
        raise NotFound(f"no suppression of {output.mask_address(address)} on {channel} (see `notifyctl suppress list`)")
    output.console.print("removed")


@suppress_app.command("list")
@guarded
def suppress_list(
    cli: typer.Context,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List suppressions.

    Example: notifyctl suppress list --channel email
    """
    from notifyctl.app.directory import suppressions
    from notifyctl.cli import output

    with context(cli) as ctx:
        rows = suppressions(ctx, channel)
    if output.wants_json(json_out):
        output.emit_json(rows)
    else:
        output.table(
            "suppressions",
            ["channel", "address", "reason", "source", "created"],
            [(r["channel"], r["address"], r["reason"], r["source"], r["created"]) for r in rows],
        )
