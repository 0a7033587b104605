"""`notifyctl init [DIR]`: a configuration, example templates, users and a campaign to start from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from notifyctl.cli.common import JsonOpt, guarded


def register(app: typer.Typer) -> None:
    """Add `init` to the notifyctl command."""
    app.command("init")(guarded(init))


def init(
    directory: Annotated[Path, typer.Argument(help="Where to write (created if missing).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that already exist.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a commented notifyctl.toml, the example templates, example users and a campaign into
    DIR (default: here), and create its database. No secret is written: the installation's own is
    made in the database. Refuses to overwrite a file unless --force (exit 2).

    Example: notifyctl init demo
    """
    from notifyctl.app.init import initialize
    from notifyctl.cli import output

    done = initialize(directory, force=force)
    steps = list(done.next_commands)
    if directory.resolve() != Path.cwd().resolve():
        steps.insert(0, f"cd {directory}")
    if output.wants_json(json_out):
        output.emit_json(
            {
                "directory": str(directory.resolve()),
                "written": done.written,
                "database": str(done.database),
                "next": steps,
            }
        )
        return
    shown = "" if not steps[0].startswith("cd ") else f" in {directory}{os.sep}"
    output.console.print(f"wrote {len(done.written)} files{shown}:", highlight=False)
    for name in _summary(done.written):
        output.console.print(f"  {name}", markup=False, highlight=False)
    output.console.print(f"database: {done.database}", markup=False, highlight=False)
    output.console.print("next, the example broadcast (email to outbox/, in-app inbox; no credentials):")
    for step in steps:
        output.console.print(f"  {step}", markup=False, highlight=False)


def _summary(written: list[str]) -> list[str]:
    """The files at the top, each template as its folder."""
    shown: dict[str, None] = {}
    for name in written:
        parts = name.split("/")
        shown["/".join(parts[:2]) + "/" if parts[0] == "templates" and len(parts) > 2 else name] = None
    return list(shown)
