"""`notifyctl serve` and `notifyctl keys …`: added to the main app by `register(app)`."""

from __future__ import annotations

from typing import Annotated

import typer

from notifyctl.cli.common import JsonOpt, context, guarded, machine_output, open_context, run_async
from notifyctl.errors import NotFound


def register(app: typer.Typer) -> None:
    """Add `serve` and the `keys` sub-app to the notifyctl command."""
    keys_app = typer.Typer(
        help="API keys for `notifyctl serve` (only a hash is stored).\n\n"
        "Example: notifyctl keys create billing-backend",
        no_args_is_help=True,
    )
    app.command("serve")(guarded(serve))
    keys_app.command("create")(guarded(keys_create))
    keys_app.command("list")(guarded(keys_list))
    keys_app.command("revoke")(guarded(keys_revoke))
    app.add_typer(keys_app, name="keys")


def _configure_logging() -> None:
    import logging
    import sys

    from notifyctl.server.accesslog import JsonLineFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger("notifyctl.server")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # aiohttp's own records (a request it could not parse, say) as JSON lines too, scrubbed by the
    # filter the app puts on these loggers (server/aiohttp_logs.py).
    aiohttp_logger = logging.getLogger("aiohttp")
    aiohttp_logger.handlers[:] = [handler]
    aiohttp_logger.setLevel(logging.WARNING)
    aiohttp_logger.propagate = False


def serve(
    cli: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8080,
    redis: Annotated[
        str | None, typer.Option("--redis", help="Deliver through the cluster's workers (redis://HOST:6379/0).")
    ] = None,
) -> None:
    """Run the HTTP server: notification API, inbox, Twilio and SES webhooks, one-click unsubscribe,
    /healthz and /metrics. SIGTERM stops it gracefully; accepted work stays in the outbox and is
    finished by the next start (or `notifyctl resume RUN`).

    Example: notifyctl serve --host 0.0.0.0 --port 8080
    """
    from notifyctl.cli import output
    from notifyctl.server.app import serve as serve_app

    _configure_logging()

    def ready(url: str) -> None:
        output.err_console.print(
            f"notifyctl serve: listening on {url} (public URL {ctx.settings.public_url})", highlight=False, markup=False
        )

    with open_context(cli, redis, "create") as ctx:
        run_async(serve_app(ctx, host, port, on_ready=ready))


def keys_create(
    cli: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the key (who uses it).")],
    json_out: JsonOpt = False,
) -> None:
    """Create an API key and print it once: only its SHA-256 hash is stored.

    Example: notifyctl keys create billing-backend
    """
    from notifyctl.app.keys import create_key
    from notifyctl.cli import output

    with context(cli, "create") as ctx:
        key = create_key(ctx, name)
    if machine_output(json_out):
        output.emit_json({"name": name, "key": key})
    else:
        output.console.print(key, highlight=False, markup=False)
        output.err_console.print("Store this key now: it cannot be shown again.", highlight=False, markup=False)


def keys_list(cli: typer.Context, json_out: JsonOpt = False) -> None:
    """List API keys (names and dates; the keys themselves are not stored).

    Example: notifyctl keys list --json
    """
    from notifyctl.app.keys import list_keys
    from notifyctl.cli import output

    with context(cli) as ctx:
        keys = list_keys(ctx)
    if machine_output(json_out):
        output.emit_json(
            [{"name": k.name, "created": k.created, "revoked_at": k.revoked_at, "active": k.active} for k in keys]
        )
    else:
        output.table(
            "API keys", ["name", "created", "revoked"], [(k.name, k.created, k.revoked_at or "") for k in keys]
        )


def keys_revoke(cli: typer.Context, name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke an API key; requests with it are refused (401) from now on.

    Example: notifyctl keys revoke billing-backend
    """
    from notifyctl.app.keys import revoke_key
    from notifyctl.cli import output

    with context(cli) as ctx:
        revoked = revoke_key(ctx, name)
    if not revoked:
        raise NotFound(f"no active key named '{name}' (see `notifyctl keys list`)")
    output.console.print(f"revoked {name}")
