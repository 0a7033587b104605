"""`notifyctl config show`: the effective settings and where each came from."""

from __future__ import annotations

from typing import Annotated

import typer

from notifyctl.cli.common import JsonOpt, guarded, settings

config_app = typer.Typer(
    help="The configuration in effect: which notifyctl.toml, which database, each setting's origin.\n\n"
    "Example: notifyctl config show --origin",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `config` group to the notifyctl command."""
    app.add_typer(config_app, name="config")


@config_app.command("show")
@guarded
def config_show(
    cli: typer.Context,
    origin: Annotated[
        bool, typer.Option("--origin", help="Say where each setting came from: file and key, variable, default.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Print the effective settings (secrets masked): the configuration file is --config, else
    NOTIFYCTL_CONFIG, else notifyctl.toml in the working directory or its nearest parent, else
    $XDG_CONFIG_HOME/notifyctl/notifyctl.toml, else none (the embedded defaults).

    Example: notifyctl config show --origin
    """
    import orjson

    from notifyctl.app.config import effective_settings
    from notifyctl.cli import output

    shown = effective_settings(settings(cli))
    if json_out:
        document: dict[str, object] = {"settings": {s.key: s.value for s in shown}}
        if origin:
            document["origins"] = {s.key: s.origin for s in shown}
        output.emit_json(document)
        return
    for item in shown:
        value = orjson.dumps(item.value).decode()
        line = f"{item.key} = {value}" + (f"    # {item.origin}" if origin else "")
        output.console.print(line, markup=False, highlight=False, soft_wrap=True)
