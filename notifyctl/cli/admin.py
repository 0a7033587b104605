"""`notifyctl endpoints …` and `notifyctl doctor`, added by `register(app)`; and `users forget`,
which the `users` group (cli/users.py) lists."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from notifyctl.cli.common import EXIT_FAILED, JsonOpt, context, guarded, options
from notifyctl.errors import InputError


def register(app: typer.Typer) -> None:
    """Add the `endpoints` sub-app and `doctor` to the notifyctl command."""
    endpoints_app = typer.Typer(
        help="Customers' webhook endpoints: signing secrets, client certificates, disabled endpoints.\n\n"
        "Example: notifyctl endpoints rotate-secret u-1001 --grace-hours 24",
        no_args_is_help=True,
    )
    endpoints_app.command("show")(guarded(endpoints_show))
    endpoints_app.command("rotate-secret")(guarded(endpoints_rotate_secret))
    endpoints_app.command("enable")(guarded(endpoints_enable))
    endpoints_app.command("set-client-cert")(guarded(endpoints_set_client_cert))
    app.add_typer(endpoints_app, name="endpoints")
    app.command("doctor")(guarded(doctor))


def users_forget(
    cli: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user to forget.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Erase a user's personal data (directory, devices, endpoint, preferences, inbox; addresses in the
    audit log become keyed hashes) while keeping their addresses suppressed, in hashed form. Audited.

    Example: notifyctl users forget u-1001 --yes
    """
    from notifyctl.app.optouts import forget
    from notifyctl.cli import output

    if not yes:
        import sys

        if not sys.stdin.isatty():  # nobody there to answer: refuse rather than prompt into the void
            raise InputError(f"users forget {user_id}: confirm with --yes (no terminal to ask on); nothing was erased")
        if not typer.confirm(f"Erase every personal data of user {user_id}? This cannot be undone"):
            raise typer.Exit(EXIT_FAILED)
    with context(cli) as ctx:
        counts = forget(ctx.conn, ctx.settings, user_id)
    if output.wants_json(json_out):
        output.emit_json({"forgotten": True, "counts": counts})
        return
    output.console.print(f"forgot user {user_id}; they stay suppressed in hashed form")
    output.table("erased", ["what", "rows"], sorted(counts.items()))


def endpoints_show(cli: typer.Context, user_id: str, json_out: JsonOpt = False) -> None:
    """Show a user's webhook endpoint: URL, state, client certificate (secrets hidden).

    Example: notifyctl endpoints show u-1001
    """
    from notifyctl.app import endpoints
    from notifyctl.cli import output

    with context(cli) as ctx:
        shown = endpoints.show(ctx, user_id)
    if output.wants_json(json_out):
        output.emit_json(shown)
    else:
        output.table(f"endpoint of {user_id}", ["field", "value"], list(shown.items()))


def endpoints_rotate_secret(
    cli: typer.Context,
    user_id: str,
    grace_hours: Annotated[
        float, typer.Option(help="How long the old secret keeps signing too (both signatures are sent).", min=0)
    ] = 24.0,
    json_out: JsonOpt = False,
) -> None:
    """Give an endpoint a new signing secret, printed once; the old one stays valid for the grace period.

    Example: notifyctl endpoints rotate-secret u-1001 --grace-hours 24
    """
    from notifyctl.app import endpoints
    from notifyctl.cli import output

    with context(cli) as ctx:
        secret = endpoints.rotate_secret(ctx, user_id, grace_hours)
    if output.wants_json(json_out):
        output.emit_json({"user_id": user_id, "secret": secret, "grace_hours": grace_hours})
        return
    output.console.print(f"new signing secret for {user_id} (shown once, store it now):", highlight=False)
    output.console.print(secret, markup=False, highlight=False)
    if grace_hours:
        output.console.print(f"the previous secret also signs for {grace_hours:g} more hour(s)", highlight=False)


def endpoints_enable(cli: typer.Context, user_id: str) -> None:
    """Re-enable an endpoint disabled after HTTP 410 or a long run of failures.

    Example: notifyctl endpoints enable u-1001
    """
    from notifyctl.app import endpoints
    from notifyctl.cli import output

    with context(cli) as ctx:
        changed = endpoints.enable(ctx, user_id)
    output.console.print(f"endpoint of {user_id} " + ("enabled" if changed else "was not disabled"))


def endpoints_set_client_cert(
    cli: typer.Context,
    user_id: str,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (PEM).")] = None,
    key: Annotated[Path | None, typer.Option(help="Its private key (PEM).")] = None,
    remove: Annotated[bool, typer.Option(help="Stop presenting a client certificate.")] = False,
) -> None:
    """Present a client certificate to an endpoint that requires mutual TLS.

    Example: notifyctl endpoints set-client-cert u-1001 --cert client.pem --key client.key
    """
    from notifyctl.app import endpoints
    from notifyctl.cli import output

    if remove == (cert is not None or key is not None):
        raise InputError("give --cert and --key, or --remove")
    with context(cli) as ctx:
        endpoints.set_client_cert(ctx, user_id, cert, key)
    output.console.print(f"endpoint of {user_id}: " + ("client certificate removed" if remove else f"presents {cert}"))


def doctor(
    cli: typer.Context,
    offline: Annotated[bool, typer.Option(help="Do not contact the providers.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check the configuration, database, templates and each provider's credentials and reachability,
    without sending anything; exit 1 when something is wrong.

    Example: notifyctl doctor
    """
    from notifyctl import aio
    from notifyctl.app.doctor import diagnose, failed
    from notifyctl.cli import output

    checks = aio.run(diagnose(options(cli).config_path, probe_providers=not offline))
    if output.wants_json(json_out):
        output.emit_json({"ok": not failed(checks), "checks": [c.as_dict() for c in checks]})
    else:
        marks = {"ok": "[green]ok[/]", "warn": "[yellow]warning[/]", "fail": "[red]problem[/]"}
        for check in checks:
            output.console.print(f"{marks[check.status]:>8}  {check.area}: ", end="")
            output.console.print(check.message, markup=False, highlight=False)
        output.console.print("[red]something is wrong[/]" if failed(checks) else "[green]all good[/]")
    if failed(checks):
        raise typer.Exit(EXIT_FAILED)
