"""Every command has help with an example and appears in the README (as sqlite-utils does)."""

from __future__ import annotations

import click
import pytest
import typer.main

from notifyctl.cli import app
from tests.workspace import REPO


def command_paths() -> list[tuple[str, click.Command]]:
    root = typer.main.get_command(app)
    paths: list[tuple[str, click.Command]] = []

    def walk(prefix: str, command: click.Command) -> None:
        commands = getattr(command, "commands", None)
        if commands:
            for name, sub in commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            paths.append((prefix, command))

    walk("", root)
    return paths


@pytest.mark.parametrize(("path", "command"), command_paths(), ids=[p for p, _ in command_paths()])
def test_command_has_an_example_and_is_in_the_readme(path: str, command: click.Command) -> None:
    assert command.help and "Example:" in command.help, f"`notifyctl {path}` has no example in its help"
    assert f"`{path}`" in (REPO / "README.md").read_text(), f"`notifyctl {path}` is not in the README"
