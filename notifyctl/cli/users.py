"""`notifyctl users import | show | forget`: the user directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from notifyctl.cli.admin import users_forget
from notifyctl.cli.common import EXIT_FAILED, JsonOpt, context, guarded

users_app = typer.Typer(help="The user directory.\n\nExample: notifyctl users import users.csv", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `users` group to the notifyctl command."""
    app.add_typer(users_app, name="users")


@users_app.command("import")
@guarded
def users_import(
    cli: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV or JSONL with user_id, email, phone, locale, timezone, "
            "push_tokens, webhook_url, webhook_secret, other attributes; - for standard input."
        ),
    ],
    skip_invalid: Annotated[bool, typer.Option(help="Import the valid rows even if some are invalid.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Insert or update users from a file; every rejected row is reported with its line number.

    Example: notifyctl users import users.csv
    """
    from notifyctl.app.stdin import input_file
    from notifyctl.app.users import import_users
    from notifyctl.cli import output

    with context(cli, "create") as ctx, input_file(ctx.settings, ctx.conn, file) as path:
        result = import_users(ctx, path, skip_invalid=skip_invalid)
    if output.wants_json(json_out):
        output.emit_json(
            {
                "imported": result.imported,
                "rejected": [str(e) for e in result.errors],
                "rejected_count": result.error_count,
            }
        )
    else:
        source = "standard input" if str(file) == "-" else file
        output.console.print(f"imported {result.imported} user(s) from {source}")
        if result.error_count:
            output.error(f"{result.error_count} row(s) rejected", result.errors)
    if result.error_count:
        raise typer.Exit(EXIT_FAILED)


@users_app.command("show")
@guarded
def users_show(cli: typer.Context, user_id: str, json_out: JsonOpt = False) -> None:
    """Show one user, with devices, endpoint (secret hidden), preferences.

    Example: notifyctl users show u-1001
    """
    from notifyctl.app.directory import show_user
    from notifyctl.cli import output

    with context(cli) as ctx:
        data = show_user(ctx, user_id)
    if output.wants_json(json_out):
        output.emit_json(data)
    else:
        output.table(f"user {user_id}", ["field", "value"], [(k, v) for k, v in data.items()])


users_app.command("forget")(guarded(users_forget))
