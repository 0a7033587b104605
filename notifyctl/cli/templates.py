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
    if output.wants_json(json_out):
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
    data: Annotated[str | None, typer.Option(help="JSON object, @file.json, or @- for standard input.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Preview a template's parts for one channel; an SMS also with its encoding and segment count.
    Piped, each part is printed as it is rendered (no wrapping, nothing added; the SMS size goes
    to stderr).

    Example: notifyctl templates render order_shipped --channel sms --locale fr --data @order.json
    """
    import sys

    from notifyctl.app.catalog import preview
    from notifyctl.cli import output
    from notifyctl.templates.segments import sms_size

    parts = preview(settings(cli), name, channel, locale, data)
    size = sms_size(parts["text"]) if channel == "sms" and isinstance(parts.get("text"), str) else None
    if output.wants_json(json_out):
        output.emit_json({**parts, "sms": size.as_dict()} if size else parts)
        return
    if output.is_terminal():
        for part, value in parts.items():
            output.console.rule(f"{name} · {channel} · {part}")
            if isinstance(value, str):
                output.console.print(value, markup=False, highlight=False, soft_wrap=True)
            else:
                output.console.print_json(data=value)
    else:
        for part, value in parts.items():
            if len(parts) > 1:
                sys.stdout.write(f"==> {part} <==\n")
            text = value if isinstance(value, str) else output.json_text(value)
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if size:
        unit = "septets" if size.encoding == "GSM-7" else "UTF-16 units"
        line = f"sms: {size.segments} segment(s), {size.encoding}, {size.units} {unit} ({size.per_segment} per segment)"
        (output.console if output.is_terminal() else output.err_console).print(line, markup=False, highlight=False)


@templates_app.command("check")
@guarded
def templates_check(
    cli: typer.Context,
    name: Annotated[str | None, typer.Argument(help="The template (with --campaign: the campaign's).")] = None,
    audience: Annotated[
        Path | None,
        typer.Option(
            help="Audience file whose columns the template may use (overrides the campaign's); - for standard input."
        ),
    ] = None,
    campaign: Annotated[
        Path | None,
        typer.Option(
            help="Campaign file: its template, audience, data and channels, as broadcast uses them "
            "(- for standard input)."
        ),
    ] = None,
    channel: Annotated[
        list[str] | None, typer.Option(help="Channels to check (default: all of the template's, or the campaign's).")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Campaign data (JSON, @file or @- for standard input), over the campaign's.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check that every variable a template uses is provided by the audience, data or directory:
    of a template against an audience file, or of a campaign (--campaign) as broadcast would render
    it. Exit 2 when something is not provided (broadcast would refuse the same way).

    Example: notifyctl templates check --campaign campaigns/welcome.toml
    """
    from contextlib import nullcontext

    from notifyctl.app.checks import TemplateFit, campaign_problems, template_problems
    from notifyctl.app.stdin import input_file, is_stdin
    from notifyctl.cli import output
    from notifyctl.errors import InputError

    if sum((is_stdin(audience), is_stdin(campaign), data == "@-")) > 1:
        raise InputError("only one of --audience -, --campaign - and --data @- can read standard input")
    from_stdin = is_stdin(audience)
    # Without a database there are no user attributes to offer: an empty one, never written to disk.
    with (
        context(cli, "empty") as ctx,
        input_file(ctx.settings, ctx.conn, audience) if audience else nullcontext(None) as audience_path,
    ):
        audience = audience_path
        if campaign is not None:
            from notifyctl.intake.campaigns import load_campaign

            loaded = load_campaign(campaign)
            if name is not None and name != loaded.template:
                raise InputError(f"{campaign} sends template '{loaded.template}', not '{name}'")
            fit = campaign_problems(ctx, loaded, audience, data, channel)
        elif name is None or audience is None:
            raise InputError("give a template and --audience FILE, or --campaign FILE")
        else:
            channels = channel or ctx.templates.get(name).channels
            fit = TemplateFit(name, audience, list(channels), template_problems(ctx, name, audience, data, channels))
    shown_audience = "standard input" if from_stdin else str(fit.audience)
    against = shown_audience + (f" (campaign {campaign}: {', '.join(fit.channels)})" if campaign else "")
    if output.wants_json(json_out):
        output.emit_json(
            {
                "template": fit.template,
                "audience": "-" if from_stdin else str(fit.audience),
                "campaign": str(campaign) if campaign else None,
                "channels": fit.channels,
                "fits": not fit.problems,
                "problems": fit.problems,
            }
        )
    elif fit.problems:
        output.error(f"template '{fit.template}' does not fit {against}")
        for p in fit.problems:
            output.err_console.print(f"  {p}", markup=False)
    else:
        output.console.print(f"template '{fit.template}' fits {against}", markup=False, highlight=False)
    if fit.problems:
        raise typer.Exit(EXIT_USAGE)
