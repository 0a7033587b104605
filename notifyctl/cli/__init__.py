"""The `notifyctl` command: one module per command group, no business rules, no SQL.

`app` (every command) and `main` (the entry point) are loaded on first use, so that importing a
submodule such as notifyctl.cli.output builds no command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    from notifyctl.cli.startup import main as main

    app: typer.Typer

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from notifyctl.cli.startup import whole_app

        return whole_app()
    if name == "main":
        from notifyctl.cli.startup import main

        return main
    raise AttributeError(f"module 'notifyctl.cli' has no attribute {name!r}")
