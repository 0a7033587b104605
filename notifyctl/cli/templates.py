"""`notifyctl templates list | render | check`: templates under templates/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from notifyctl.cli.common import EXIT_USAGE, JsonOpt, context, guarded, settings

templates_app = typer.Typer(
    help="Templates under templates/.\n\nExample: notifyctl templates list", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the `templates` group to the notifyctl command."""
    app.add_typer(templates_app, name="templates")


@templates_app.command("list")
@guarded
def templates_list(cli: typer.Context, json_out: JsonOpt = False) -> None:
    """List templates with their channels, locales and version.

    Example: notifyctl templates list
    """
    from notifyctl.app.catalog import templates
    from notifyctl.cli import output

    infos = templates(settings(cli))
    if json_out:
        output.emit_json([vars(i) if not hasattr(i, "model_dump") else i.model_dump() for i in infos])
    else:
        output.table(
            "templates",
            ["name", "category", "channels", "locales", "version"],
            [(i.name, i.category, ",".join(i.channels), ",".join(i.locales), i.version) for i in infos],
        )


@templates_app.command("render")
@guarded
def templates_render(
    cli: typer.Context,
    name: str,
    channel: Annotated[str, typer.Option(help="The channel part to render.")],
    locale: Annotated[str | None, typer.Option(help="e.g. fr-CA (falls back to fr, then default).")] = None,
    data: Annotated[str | None, typer.Option(help="JSON object, or @file.json.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Preview a template's parts for one channel.

    Example: notifyctl templates render order_shipped --channel sms --locale fr --data @order.json
    """
    from notifyctl.app.catalog import preview
    from notifyctl.cli import output

    parts = preview(settings(cli), name, channel, locale, data)
    if json_out:
        output.emit_json(parts)
    else:
        for part, value in parts.items():
            output.console.rule(f"{name} · {channel} · {part}")
            if isinstance(value, str):
                output.console.print(value, markup=False, highlight=False)
            else:
                output.console.print_json(data=value)


@templates_app.command("check")
@guarded
def templates_check(
    cli: typer.Context,
    name: str,
    audience: Annotated[Path, typer.Option(help="Audience file whose columns the template may use.")],
    channel: Annotated[
        list[str] | None, typer.Option(help="Channels to check (default: all of the template's).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Campaign data (JSON or @file).")] = None,
) -> None:
    """Check that every variable a template uses is provided by the audience, data or directory.

    Example: notifyctl templates check welcome --audience campaigns/welcome-audience.csv
    """
    from notifyctl.app.checks import template_problems
    from notifyctl.cli import output

    with context(cli) as ctx:
        problems = template_problems(ctx, name, audience, data, channel)
    if problems:
        output.error(f"template '{name}' does not fit {audience}")
        for p in problems:
            output.err_console.print(f"  {p}", markup=False)
        raise typer.Exit(EXIT_USAGE)
    output.console.print(f"template '{name}' fits {audience}")
