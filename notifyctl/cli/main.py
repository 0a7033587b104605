"""The `notifyctl` command: parse → settings → call the library → draw the result.

No SQL and no business rules here. Exit codes: 0 all sent or legitimately skipped, 1 some
deliveries failed, 2 bad usage, configuration or input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from notifyctl.errors import InputError, NotifyctlError

if TYPE_CHECKING:
    from notifyctl.app.context import Context
    from notifyctl.pipeline.engine import Engine, RunOutcome
    from notifyctl.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    name="notifyctl",
    help="Multi-channel notifications (email, SMS, push, in-app, webhooks) that are never lost and never "
    "sent twice.\n\nExample: notifyctl broadcast campaigns/welcome.toml",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
users_app = typer.Typer(help="The user directory.\n\nExample: notifyctl users import users.csv", no_args_is_help=True)
prefs_app = typer.Typer(
    help="Preferences per user × channel × category.\n\n"
    "Example: notifyctl prefs set u1 --channel sms --category marketing --off",
    no_args_is_help=True,
)
suppress_app = typer.Typer(
    help="Addresses that must never be contacted.\n\n"
    "Example: notifyctl suppress add email a@example.com --reason manual",
    no_args_is_help=True,
)
templates_app = typer.Typer(
    help="Templates under templates/.\n\nExample: notifyctl templates list", no_args_is_help=True
)
runs_app = typer.Typer(
    help="Runs (each send and broadcast).\n\nExample: notifyctl runs show RUN_ID", no_args_is_help=True
)
dlq_app = typer.Typer(
    help="Dead letters: inspect, re-drive, purge.\n\nExample: notifyctl dlq redrive --run RUN_ID", no_args_is_help=True
)
app.add_typer(users_app, name="users")
app.add_typer(prefs_app, name="prefs")
app.add_typer(suppress_app, name="suppress")
app.add_typer(templates_app, name="templates")
app.add_typer(runs_app, name="runs")
app.add_typer(dlq_app, name="dlq")


def _register_more() -> None:
    from notifyctl.cli.admin import register as register_admin
    from notifyctl.cli.cluster import register as register_cluster
    from notifyctl.cli.server import register as register_server

    register_server(app)
    register_admin(app)
    register_cluster(app)


_config_path: Path | None = None
_log: tuple[str, Path | None] = ("info", None)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
# No NOTIFYCTL_* envvar here: settings would read it as a configuration key.
RedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis", help="Run on the cluster: publish to Redis Streams for `notifyctl worker` (redis://HOST:6379/0)."
    ),
]


def _print_version(value: bool) -> None:
    """`--version` is eager: it answers before click asks for a command."""
    if value:
        from notifyctl import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _main(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Path to notifyctl.toml.", envvar="NOTIFYCTL_CONFIG")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
    log_file: Annotated[
        Path | None,
        typer.Option("--log-file", help="Write structured JSON logs here (PII masked).", envvar="NOTIFYCTL_LOG"),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """notifyctl: multi-channel notifications."""
    global _config_path, _log
    _config_path = config
    _log = (log_level, log_file)


# --- plumbing -----------------------------------------------------------------------------------


def settings() -> Settings:
    from notifyctl.settings import load_settings

    loaded = load_settings(_config_path)
    level, path = _log
    if path is not None:
        from notifyctl.logs import configure_logging
        from notifyctl.security.redaction import configured_secrets

        configure_logging(level, path, configured_secrets(loaded))
    return loaded


@contextmanager
def context() -> Iterator[Context]:
    from notifyctl.app.context import Context

    ctx = Context.open(settings())
    try:
        yield ctx
    finally:
        ctx.conn.close()


def machine_output(json_flag: bool) -> bool:
    return json_flag or not sys.stdout.isatty()


def run_async(coro: Coroutine[Any, Any, T], engines: list[Engine] | None = None) -> T:
    """Run a coroutine; the first Ctrl-C / SIGTERM stops the engine cleanly, a second one hard."""
    import asyncio  # here, not at the top: `notifyctl --help` should not pay for it
    import signal

    from notifyctl.cli import output

    async def main() -> T:
        loop = asyncio.get_running_loop()
        presses = 0

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            if presses == 1 and engines:
                output.err_console.print(
                    "[yellow]stopping: finishing requests in flight (press Ctrl-C again to abort)[/]"
                )
                for engine in engines:
                    engine.stop()
            else:
                raise KeyboardInterrupt

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        return await coro

    from notifyctl import aio

    return aio.run(main())


def fail(exc: NotifyctlError) -> None:
    from notifyctl.cli import output

    rows = exc.rows if isinstance(exc, InputError) else []
    output.error(str(exc), rows)
    raise typer.Exit(2)


def guarded(fn: Callable[..., T]) -> Callable[..., T]:
    """NotifyctlError → a clear message on stderr and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except NotifyctlError as exc:
            fail(exc)
            raise  # unreachable; fail() exits

    return wrapper


def read_data(value: str | None) -> dict[str, Any]:
    """--data '{"a": 1}' or --data @file.json."""
    import orjson

    if not value:
        return {}
    raw: str | bytes = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"--data: cannot read {path}: {exc}") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"--data is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError("--data must be a JSON object")
    return data


def outcome_payload(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "run_id": outcome.run_id,
        "state": outcome.state,
        "counts": outcome.counts,
        "elapsed_s": round(outcome.elapsed_s, 3),
        "sent_this_session": outcome.sent_this_session,
        "rate_per_s": round(outcome.sent_this_session / outcome.elapsed_s, 1) if outcome.elapsed_s else 0,
    }


def outcome_exit_code(outcome: RunOutcome) -> int:
    """0: everything sent or legitimately skipped/deferred; 1: some failed; 130: interrupted."""
    failed = sum(states.get("dead", 0) + states.get("in_doubt", 0) for states in outcome.counts.values())
    if failed:
        return 1
    return 130 if outcome.state == "interrupted" else 0


def print_outcome(outcome: RunOutcome, title: str) -> None:
    from notifyctl.cli import output

    payload = outcome_payload(outcome)
    failed = sum(states.get("dead", 0) + states.get("in_doubt", 0) for states in outcome.counts.values())
    output.summary_table(f"{title} {outcome.run_id}: {outcome.state}", outcome.counts)
    output.console.print(f"{outcome.sent_this_session} sent in {outcome.elapsed_s:.1f}s ({payload['rate_per_s']}/s)")
    if outcome.state == "interrupted":
        output.console.print(f"[yellow]Interrupted. Resume with:[/] notifyctl resume {outcome.run_id}")
    elif outcome.state == "waiting":
        output.console.print(
            "Some deliveries wait for quiet hours to end; `notifyctl resume --due` "
            "(from cron) sends them when they are due."
        )
    if failed:
        output.console.print(f"[red]{failed} failed[/]: see `notifyctl dlq list --run {outcome.run_id}`")


def report_outcome(outcome: RunOutcome, json_out: bool, title: str) -> None:
    """Print a run's result and exit with the code cron can act on."""
    from notifyctl.cli import output

    if json_out:
        output.emit_json(outcome_payload(outcome))
    else:
        print_outcome(outcome, title)
    code = outcome_exit_code(outcome)
    if code:
        raise typer.Exit(code)


def report_dry_run(result: Any, json_out: bool) -> None:
    from notifyctl.cli import output

    if json_out:
        output.emit_json(
            {
                "dry_run": True,
                "counts": result.counts,
                "reasons": result.reasons,
                "rejected": [str(r) for r in result.rejected],
            }
        )
        return
    output.summary_table("dry run (nothing sent, nothing recorded)", result.counts)
    if result.reasons:
        output.table("reasons", ["state:reason", "count"], sorted(result.reasons.items()))


# --- users ----------------------------------------------------------------------------------------


@users_app.command("import")
@guarded
def users_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV or JSONL with user_id, email, phone, locale, timezone, "
            "push_tokens, webhook_url, webhook_secret, other attributes."
        ),
    ],
    skip_invalid: Annotated[bool, typer.Option(help="Import the valid rows even if some are invalid.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Insert or update users from a file; every rejected row is reported with its line number.

    Example: notifyctl users import users.csv
    """
    from notifyctl.app.users import import_users
    from notifyctl.cli import output

    with context() as ctx:
        result = import_users(ctx, file, skip_invalid=skip_invalid)
    if json_out:
        output.emit_json(
            {
                "imported": result.imported,
                "rejected": [str(e) for e in result.errors],
                "rejected_count": result.error_count,
            }
        )
    else:
        output.console.print(f"imported {result.imported} user(s) from {file}")
        if result.error_count:
            output.error(f"{result.error_count} row(s) rejected", result.errors)
    if result.error_count:
        raise typer.Exit(1)


@users_app.command("show")
@guarded
def users_show(user_id: str, json_out: JsonOpt = False) -> None:
    """Show one user, with devices, endpoint (secret hidden), preferences.

    Example: notifyctl users show u-1001
    """
    from notifyctl.cli import output
    from notifyctl.store import directory

    with context() as ctx:
        user = directory.get_user(ctx.conn, user_id)
        if user is None:
            raise InputError(f"unknown user '{user_id}'")
        prefs = directory.preferences(ctx.conn, user_id)
    data = user.model_dump(exclude={"webhook_secret"})
    data["webhook_secret"] = "whsec_…(hidden)" if user.webhook_secret else None
    data["preferences"] = prefs
    if json_out:
        output.emit_json(data)
    else:
        output.table(f"user {user_id}", ["field", "value"], [(k, v) for k, v in data.items()])


# --- preferences ----------------------------------------------------------------------------------


@prefs_app.command("set")
@guarded
def prefs_set(
    user_id: str,
    channel: Annotated[str, typer.Option(help="email, sms, push, inapp or webhook.")],
    category: Annotated[str, typer.Option(help="A category name, or * for all.")],
    on: Annotated[bool, typer.Option("--on/--off", help="Opt in (--on) or out (--off).")] = True,
) -> None:
    """Opt a user in or out of a category on a channel.

    Example: notifyctl prefs set u-1001 --channel sms --category marketing --off
    """
    from notifyctl.cli import output
    from notifyctl.models import CHANNELS
    from notifyctl.store import directory

    if channel not in CHANNELS:
        raise InputError(f"--channel: unknown channel '{channel}' (known: {', '.join(CHANNELS)})")
    with context() as ctx:
        if directory.get_user(ctx.conn, user_id) is None:
            raise InputError(f"unknown user '{user_id}'")
        directory.set_preference(ctx.conn, user_id, channel, category, on)
    output.console.print(f"{user_id}: {channel}/{category} {'on' if on else 'off'}")


@prefs_app.command("show")
@guarded
def prefs_show(user_id: str, json_out: JsonOpt = False) -> None:
    """Show a user's preferences.

    Example: notifyctl prefs show u-1001 --json
    """
    from notifyctl.cli import output
    from notifyctl.store import directory

    with context() as ctx:
        prefs = directory.preferences(ctx.conn, user_id)
    if json_out:
        output.emit_json(prefs)
    else:
        output.table(
            f"preferences of {user_id}",
            ["channel", "category", "enabled", "source", "updated"],
            [(p["channel"], p["category"], "on" if p["enabled"] else "off", p["source"], p["updated"]) for p in prefs],
        )


# --- suppressions ---------------------------------------------------------------------------------


@suppress_app.command("add")
@guarded
def suppress_add(
    channel: str,
    address: str,
    reason: Annotated[str, typer.Option(help="manual, unsubscribe, bounce, complaint or stop.")] = "manual",
    redis: RedisOpt = None,
) -> None:
    """Never contact an address on a channel again (addresses are normalised first).

    Example: notifyctl suppress add sms "+1 415 555 2671" --reason stop
    """
    from notifyctl.addresses import AddressError
    from notifyctl.cli import output
    from notifyctl.store import directory

    with context() as ctx:
        try:
            normalized = directory.add_suppression(ctx.conn, channel, address, reason)
        except (AddressError, ValueError) as exc:
            raise InputError(str(exc)) from exc
    if redis:
        from notifyctl.cli.cluster import mirror_suppression

        mirror_suppression(redis, channel, normalized, reason)  # every worker stops before its next send
    output.console.print(f"suppressed {channel} {output.mask_address(normalized)} ({reason})")


@suppress_app.command("remove")
@guarded
def suppress_remove(channel: str, address: str, redis: RedisOpt = None) -> None:
    """Lift a suppression.

    Example: notifyctl suppress remove email a@example.com
    """
    from notifyctl.addresses import AddressError
    from notifyctl.cli import output
    from notifyctl.store import directory

    with context() as ctx:
        try:
            removed = directory.remove_suppression(ctx.conn, channel, address)
        except AddressError as exc:
            raise InputError(str(exc)) from exc
    if not removed:
        output.error("no such suppression")
        raise typer.Exit(1)
    if redis:
        from notifyctl.cli.cluster import mirror_suppression

        mirror_suppression(redis, channel, address, None)
    output.console.print("removed")


@suppress_app.command("list")
@guarded
def suppress_list(
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None, json_out: JsonOpt = False
) -> None:
    """List suppressions.

    Example: notifyctl suppress list --channel email
    """
    from notifyctl.cli import output
    from notifyctl.store import directory

    with context() as ctx:
        rows = directory.suppressions(ctx.conn, channel)
    if json_out:
        output.emit_json(rows)
    else:
        output.table(
            "suppressions",
            ["channel", "address", "reason", "source", "created"],
            [(r["channel"], r["address"], r["reason"], r["source"], r["created"]) for r in rows],
        )


# --- templates ------------------------------------------------------------------------------------


@templates_app.command("list")
@guarded
def templates_list(json_out: JsonOpt = False) -> None:
    """List templates with their channels, locales and version.

    Example: notifyctl templates list
    """
    from notifyctl.cli import output
    from notifyctl.templates.store import TemplateStore

    infos = TemplateStore(settings().templates_path).list()
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
    name: str,
    channel: Annotated[str, typer.Option(help="The channel part to render.")],
    locale: Annotated[str | None, typer.Option(help="e.g. fr-CA (falls back to fr, then default).")] = None,
    data: Annotated[str | None, typer.Option(help="JSON object, or @file.json.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Preview a template's parts for one channel.

    Example: notifyctl templates render order_shipped --channel sms --locale fr --data @order.json
    """
    from notifyctl.cli import output
    from notifyctl.templates.store import BUILTIN_VARIABLES, TemplateStore

    s = settings()
    template = TemplateStore(s.templates_path).get(name)
    context: dict[str, Any] = {v: f"<{v}>" for v in BUILTIN_VARIABLES}
    context.update(read_data(data))
    parts = template.render(channel, locale, context)
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
    from notifyctl.cli import output
    from notifyctl.intake import audience as audience_mod
    from notifyctl.store import directory
    from notifyctl.templates.store import BUILTIN_VARIABLES

    with context() as ctx:
        template = ctx.templates.get(name)
        available = (
            audience_mod.audience_columns(audience)
            | set(read_data(data))
            | directory.user_attribute_keys(ctx.conn)
            | set(BUILTIN_VARIABLES)
        )
        problems = template.check_variables(available, channel or template.channels)
    if problems:
        output.error(f"template '{name}' does not fit {audience}")
        for p in problems:
            output.err_console.print(f"  {p}", markup=False)
        raise typer.Exit(2)
    output.console.print(f"template '{name}' fits {audience}")


# --- send and broadcast ---------------------------------------------------------------------------


@app.command()
@guarded
def send(
    template: Annotated[str | None, typer.Option("--template", "-t", help="Template name.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="User id.")] = None,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="Channel (repeatable); default: the template's channels.")
    ] = None,
    data: Annotated[str | None, typer.Option(help="JSON object or @file.json.")] = None,
    event_id: Annotated[str | None, typer.Option(help="Logical event id: the same one is sent once.")] = None,
    category: Annotated[str | None, typer.Option(help="Override the template's category.")] = None,
    events: Annotated[
        str | None, typer.Option(help="JSON lines of NotificationRequested events, or - for stdin.")
    ] = None,
    skip_invalid: Annotated[bool, typer.Option(help="With --events: send the valid events, report the rest.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Decide everything, send and record nothing.")] = False,
    redis: RedisOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send one notification (or a stream of events) and wait for the outcome.

    Example: notifyctl send -t order_shipped -u u-1001 --channel email --data '{"order_id": "A-1"}'
    """
    from notifyctl.app import send as sending
    from notifyctl.app.dry_run import DryRun
    from notifyctl.cli.cluster import open_context
    from notifyctl.cli.output import ChannelProgress

    machine = machine_output(json_out)
    with open_context(redis) as ctx, ChannelProgress(enabled=not machine) as progress:
        if events is not None:
            if template or user:
                raise InputError("--events cannot be combined with --template/--user")
            path = Path(events)
            if events == "-":
                from notifyctl.intake.audience import spool_stdin

                # Kept next to the database so that an interrupted run can be resumed from it.
                spool = ctx.settings.database_path.parent / "spool"
                spool.mkdir(mode=0o700, exist_ok=True)
                path = spool_stdin(sys.stdin.buffer, spool)
            elif not path.is_file():
                raise InputError(f"events file not found: {path}")
            result = run_async(
                sending.send_events(ctx, path, skip_invalid=skip_invalid, dry_run=dry_run, progress=progress)
            )
        else:
            if not template or not user:
                raise InputError("give --template and --user (or --events FILE)")
            result = run_async(
                sending.send(
                    ctx,
                    template_name=template,
                    user_id=user,
                    channels=channel,
                    data=read_data(data),
                    event_id=event_id,
                    category=category,
                    dry_run=dry_run,
                    progress=progress,
                )
            )
    if isinstance(result, DryRun):
        report_dry_run(result, machine)
    else:
        report_outcome(result, machine, "send")


@app.command()
@guarded
def broadcast(
    campaign: Annotated[Path, typer.Argument(help="Campaign file (TOML).")],
    audience: Annotated[Path | None, typer.Option(help="Audience file (overrides the campaign's).")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Send to the valid rows, report the invalid ones.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Decide everything, send and record nothing.")] = False,
    redis: RedisOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send a campaign to an audience file, with a progress bar per channel.

    Example: notifyctl broadcast campaigns/welcome.toml --audience users-2026-11.csv
    """
    from notifyctl.app import broadcast as broadcasting
    from notifyctl.app.broadcast import Started
    from notifyctl.app.dry_run import DryRun
    from notifyctl.cli import output
    from notifyctl.cli.output import ChannelProgress
    from notifyctl.intake.campaigns import load_campaign

    machine = machine_output(json_out)
    engines: list[Engine] = []
    from notifyctl.cli.cluster import open_context

    loaded = load_campaign(campaign)
    with open_context(redis) as ctx, ChannelProgress(enabled=not machine) as progress:
        result = run_async(
            broadcasting.broadcast(
                ctx,
                loaded,
                audience_path=audience,
                dry_run=dry_run,
                skip_invalid=skip_invalid,
                progress=progress,
                on_engine=engines.append,
            ),
            engines,
        )
    if isinstance(result, DryRun):
        report_dry_run(result, machine)
    elif isinstance(result, Started):
        if machine:
            output.emit_json({"run_id": result.run_id, "state": result.state, "send_at": result.send_at})
        else:
            output.console.print(
                f"run {result.run_id} scheduled for {result.send_at}; "
                "`notifyctl resume --due` (from cron) starts it then"
            )
    else:
        report_outcome(result, machine, "broadcast")


@app.command()
@guarded
def resume(
    run_id: Annotated[str | None, typer.Argument(help="The run to finish.")] = None,
    due: Annotated[
        bool,
        typer.Option(
            help="Finish every run that is interrupted, scheduled and due, or has "
            "deferred deliveries now due. Safe to run from cron every minute."
        ),
    ] = False,
    allow_template_change: Annotated[bool, typer.Option(help="Render the rest with the changed template.")] = False,
    redis: RedisOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Continue an interrupted run from where it stopped, without re-sending anything recorded.

    Example: notifyctl resume run_20261121_ab12cd   (cron: * * * * * notifyctl resume --due)
    """
    from notifyctl.app import resume as resuming
    from notifyctl.app.resume import ResumeSkipped
    from notifyctl.cli import output
    from notifyctl.cli.output import ChannelProgress

    machine = machine_output(json_out)
    if not due and not run_id:
        raise InputError("give a RUN id, or --due")
    engines: list[Engine] = []
    worst = 0
    payloads: list[dict[str, Any]] = []
    from notifyctl.cli.cluster import open_context

    with open_context(redis) as ctx:
        targets = resuming.due_runs(ctx) if due else [run_id or ""]
        for target in targets:
            with ChannelProgress(enabled=not machine) as progress:
                result = run_async(
                    resuming.resume(
                        ctx,
                        target,
                        allow_template_change=allow_template_change,
                        progress=progress,
                        on_engine=engines.append,
                    ),
                    engines,
                )
            if isinstance(result, ResumeSkipped):
                payloads.append({"run_id": target, "skipped": result.why})
                if not machine:
                    output.console.print(f"{target}: {result.why}")
                continue
            payloads.append(outcome_payload(result))
            if not machine:
                print_outcome(result, "resume")
            worst = max(worst, outcome_exit_code(result))
            if engines and engines[-1].stopping.is_set():
                break
    if machine:
        output.emit_json({"resumed": payloads} if due else payloads[0])
    elif due and not targets:
        output.console.print("nothing is due")
    if worst:
        raise typer.Exit(worst)


# --- runs and audit -------------------------------------------------------------------------------


@runs_app.command("list")
@guarded
def runs_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50, json_out: JsonOpt = False
) -> None:
    """List runs, newest first.

    Example: notifyctl runs list --limit 10
    """
    from notifyctl.cli import output
    from notifyctl.store import runs

    with context() as ctx:
        items = runs.list_runs(ctx.conn, limit)
        totals = {r.run_id: runs.counts(ctx.conn, r.run_id) for r in items}
    if json_out:
        output.emit_json([{**vars(r), "counts": totals[r.run_id]} for r in items])
        return
    output.table(
        "runs",
        ["run", "kind", "campaign", "template", "state", "deliveries", "created"],
        [
            (
                r.run_id,
                r.kind,
                r.campaign_id,
                r.template,
                r.state,
                sum(sum(s.values()) for s in totals[r.run_id].values()),
                r.created,
            )
            for r in items
        ],
    )


@runs_app.command("show")
@guarded
def runs_show(run_id: str, json_out: JsonOpt = False) -> None:
    """Counts per state and channel, rate, errors and times of one run.

    Example: notifyctl runs show run_20261121_ab12cd --json
    """
    from notifyctl.app.audit import run_details
    from notifyctl.cli import output

    with context() as ctx:
        details = run_details(ctx, run_id)
    if json_out:
        output.emit_json(details)
        return
    output.table(
        f"run {run_id}",
        ["field", "value"],
        [(k, v) for k, v in details.items() if k not in ("counts", "reasons", "errors")],
    )
    output.summary_table("deliveries", details["counts"])
    if details["reasons"]:
        output.table("reasons", ["state:reason", "count"], sorted(details["reasons"].items()))
    if details["errors"]:
        output.table("errors", ["class", "message", "count"], details["errors"])


@app.command()
@guarded
def audit(
    run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this state (sent, skipped, dead, …).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    limit: Annotated[int, typer.Option(help="At most this many rows (0: all).")] = 1000,
    redact: Annotated[bool, typer.Option(help="Mask addresses, for sharing.")] = False,
) -> None:
    """Every delivery with its decision, provider, message id, template version, attempts and times.

    Example: notifyctl audit --run run_20261121_ab12cd --status dead --format csv > dead.csv
    """
    from notifyctl.app.audit import AUDIT_COLUMNS, audit_rows
    from notifyctl.cli import output

    if fmt not in ("table", "json", "csv"):
        raise InputError("--format must be table, json or csv")
    with context() as ctx:
        rows = audit_rows(ctx, run_id=run, user_id=user, state=status, limit=limit)
    if redact:
        for row in rows:
            row["address"] = output.mask_address(row["address"])
    if fmt == "json":
        output.emit_json(rows)
    elif fmt == "csv":
        output.emit_csv(rows, AUDIT_COLUMNS)
    else:
        shown = ("id", "run_id", "user_id", "channel", "address", "state", "reason", "provider", "attempts", "updated")
        output.table("audit", shown, [[r[c] for c in shown] for r in rows])


# --- dead letters ---------------------------------------------------------------------------------


@dlq_app.command("list")
@guarded
def dlq_list(
    run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    error_class: Annotated[str | None, typer.Option("--error", help="Only this error class.")] = None,
    since: Annotated[str | None, typer.Option(help="Only since this ISO time.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List dead letters.

    Example: notifyctl dlq list --run run_20261121_ab12cd --error TransientError
    """
    from notifyctl.app.dlq import dead_letters
    from notifyctl.cli import output

    with context() as ctx:
        rows = dead_letters(ctx, run_id=run, channel=channel, error_class=error_class, since=since)
    if json_out:
        output.emit_json(rows)
        return
    output.table(
        "dead letters",
        ["delivery", "run", "channel", "address", "error", "message", "attempts", "created", "redriven"],
        [
            (
                r["delivery_id"],
                r["run_id"],
                r["channel"],
                output.mask_address(r["address"]),
                r["error_class"],
                (r["error_message"] or "")[:60],
                r["attempts"],
                r["created"],
                r["redriven_at"] or "",
            )
            for r in rows
        ],
    )


@dlq_app.command("show")
@guarded
def dlq_show(delivery_id: int, json_out: JsonOpt = False) -> None:
    """One dead letter: envelope, error and every attempt.

    Example: notifyctl dlq show 1234
    """
    from notifyctl.app.dlq import dead_letter
    from notifyctl.cli import output

    with context() as ctx:
        item = dead_letter(ctx, delivery_id)
    if json_out:
        output.emit_json(item)
        return
    output.table(
        f"dead letter {delivery_id}",
        ["field", "value"],
        [(k, v) for k, v in item.items() if k not in ("attempts", "envelope")],
    )
    output.table(
        "attempts",
        ["#", "started", "outcome", "provider", "code", "latency ms", "message"],
        [
            (
                a["number"],
                a["started"],
                a["outcome"],
                a["provider"],
                a["code"],
                round(a["latency_ms"] or 0, 1),
                a["message"],
            )
            for a in item["attempts"]
        ],
    )
    output.console.print_json(data=item["envelope"])


@dlq_app.command("redrive")
@guarded
def dlq_redrive(
    ids: Annotated[list[int] | None, typer.Option("--id", help="Delivery id (repeatable).")] = None,
    run: Annotated[str | None, typer.Option(help="Every dead letter of this run.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    in_doubt: Annotated[bool, typer.Option(help="Re-drive deliveries held in_doubt after a crash instead.")] = False,
    force: Annotated[bool, typer.Option(help="Also those older than the idempotency window.")] = False,
    rate: Annotated[float | None, typer.Option(help="At most N messages per second.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be re-driven.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Send dead letters again, re-checking suppressions, preferences, quiet hours and idempotency.

    Example: notifyctl dlq redrive --run run_20261121_ab12cd --rate 10
    """
    from notifyctl.app import redrive as redriving
    from notifyctl.cli import output
    from notifyctl.cli.output import ChannelProgress

    machine = machine_output(json_out)
    with context() as ctx:
        plan = redriving.select_for_redrive(ctx, ids=ids, run_id=run, all_=all_, in_doubt=in_doubt, force=force)
        for delivery_id, why in plan.refused:
            output.error(f"delivery {delivery_id}: {why}")
        if dry_run or not plan.delivery_ids:
            if machine:
                output.emit_json({"would_redrive": plan.delivery_ids, "refused": plan.refused})
            else:
                output.console.print(
                    f"{len(plan.delivery_ids)} deliveries would be re-driven" if dry_run else "nothing to re-drive"
                )
            raise typer.Exit(1 if plan.refused else 0)
        with ChannelProgress(enabled=not machine) as progress:
            result = run_async(redriving.redrive(ctx, plan, rate=rate, progress=progress))
    assert result is not None
    if plan.refused and not machine:
        output.console.print(f"[yellow]{len(plan.refused)} refused[/] (see above)")
    report_outcome(result, machine, "redrive")
    if plan.refused:
        raise typer.Exit(1)


@dlq_app.command("purge")
@guarded
def dlq_purge(
    ids: Annotated[list[int] | None, typer.Option("--id", help="Delivery id (repeatable).")] = None,
    run: Annotated[str | None, typer.Option(help="Every dead letter of this run.")] = None,
    before: Annotated[str | None, typer.Option(help="Older than this ISO time.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
) -> None:
    """Delete dead letters (the deliveries stay in the audit as dead).

    Example: notifyctl dlq purge --before 2026-10-01
    """
    from datetime import UTC, datetime

    from notifyctl.app.dlq import purge_dead_letters
    from notifyctl.cli import output

    cutoff = None
    if before:
        try:
            cutoff = datetime.fromisoformat(before)
        except ValueError as exc:
            raise InputError(f"--before: not an ISO date/time: {before}") from exc
        cutoff = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    with context() as ctx:
        n = purge_dead_letters(ctx, ids=ids, run_id=run, before=cutoff, all_=all_)
    output.console.print(f"purged {n} dead letter(s)")


_register_more()


# The group's options that take a value (next, or attached); only these may come before the
# command for `main` to build that command alone (see `_app_for`).
_GROUP_VALUE_OPTIONS = ("--config", "-c", "--log-file", "--log-level")
_GROUP_VALUE_ATTACHED = ("--config=", "--log-file=", "--log-level=", "-c")


def _invoked_command(argv: list[str]) -> str | None:
    """The command named on a command line like `[--config X] [--log-level L] COMMAND ...`; None
    when anything else comes first (--help, --version, no command)."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in _GROUP_VALUE_OPTIONS:
            i += 2
        elif token.startswith(_GROUP_VALUE_ATTACHED):  # --config=FILE, -cFILE
            i += 1
        elif token.startswith("-"):
            return None
        else:
            return token
    return None


def _app_for(argv: list[str]) -> typer.Typer:
    """The app with only the command the command line names, when it plainly names one: click then
    builds one command rather than all of them (their options, their type hints), ~30 ms of every
    start. Anything else (help, a typo, shell completion) gets the whole app."""
    import os

    name = _invoked_command(argv)
    if name is None or any(key.startswith("_") and key.endswith("_COMPLETE") for key in os.environ):
        return app
    commands = [
        info
        for info in app.registered_commands
        if info.callback is not None and (info.name or typer.main.get_command_name(info.callback.__name__)) == name
    ]
    groups = [info for info in app.registered_groups if info.name == name]
    if len(commands) + len(groups) != 1:
        return app
    import copy

    only = copy.copy(app)
    only.registered_commands = commands
    only.registered_groups = groups
    return only


def _exit_without_teardown(done: SystemExit) -> None:
    """Leave as `done` would, without tearing the interpreter down: freeing every module and
    object one by one takes ~100 ms after a command that has already finished. Exit handlers still
    run (logging flushes its files, temporary directories go) and the standard streams are
    flushed; while another thread runs, or when anything is unusual, Python exits as usual."""
    import atexit
    import os
    import threading

    code = done.code
    if threading.active_count() > 1 or not (code is None or isinstance(code, int)):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe, say: Python's own exit reports it
        return
    os._exit(code or 0)


def main() -> None:
    try:
        _app_for(sys.argv[1:])()
    except SystemExit as done:
        if _invoked_command(sys.argv[1:]) not in ("serve", "worker"):  # long-lived: nothing to gain
            _exit_without_teardown(done)
        raise
    except Exception as exc:  # a bug: keep a scrubbed crash report, never a secret on screen
        from notifyctl.logs import write_crash_report
        from notifyctl.security.redaction import redact_secrets

        secrets: list[str] = []
        try:
            from notifyctl.security.redaction import configured_secrets

            secrets = configured_secrets(settings())
        except Exception:  # the configuration itself may be what is broken
            pass
        report = write_crash_report(exc, Path.cwd(), secrets)
        sys.stderr.write(f"notifyctl crashed: {redact_secrets(str(exc), secrets)}\nA report is in {report}\n")
        raise SystemExit(70) from None


if __name__ == "__main__":
    main()
