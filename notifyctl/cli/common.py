"""What every command shares: the global options, the context, the error guard, shared options,
output selection, running a coroutine, and reporting a run's outcome.

Exit codes: 0 all sent or legitimately skipped, 1 some deliveries failed, 2 bad usage,
configuration or input, 70 a crash (a scrubbed report is written), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from notifyctl.errors import InputError, NotifyctlError
from notifyctl.states import DeliveryState, RunState

if TYPE_CHECKING:
    from notifyctl.app.context import Context, Missing
    from notifyctl.app.dry_run import DryRun
    from notifyctl.pipeline.engine import Engine, RunOutcome
    from notifyctl.settings import Settings

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1  # some deliveries failed (dead or in doubt), or a check found a problem
EXIT_USAGE = 2  # bad usage, configuration or input: nothing was sent
EXIT_CRASH = 70
EXIT_INTERRUPTED = 130

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
# No NOTIFYCTL_* envvar here: settings would read it as a configuration key.
RedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis", help="Run on the cluster: publish to Redis Streams for `notifyctl worker` (redis://HOST:6379/0)."
    ),
]


# --- the global options ---------------------------------------------------------------------------


@dataclass
class Options:
    """The options given before the command (--config, --log-level, --log-file): the Typer
    context object, which a command reaches through its `typer.Context` (`options(cli)`)."""

    config_path: Path | None = None
    log_level: str = "info"
    log_file: Path | None = None
    verbose: int = 0  # -v: the run's log lines (info) on stderr, or in --log-file; -vv: debug
    quiet: bool = False  # -q: no progress bars or summaries for people; errors only

    @property
    def logging(self) -> tuple[str, Path | None] | None:
        """Where the logs go (level, file; None: stderr), or None for no log at all."""
        level = self.log_level
        if self.verbose and level == "info":  # -v and -vv say how much, unless --log-level does
            level = "debug" if self.verbose > 1 else "info"
        if self.log_file is None and not self.verbose:
            return None
        return level, self.log_file


def _print_version(value: bool) -> None:
    """`--version` is eager: it answers before click asks for a command."""
    if value:
        from notifyctl import __version__

        typer.echo(__version__)
        raise typer.Exit(EXIT_OK)


def _known_log_level(value: str) -> str:
    """--log-level is one of the logging levels, whether or not a log is written this time."""
    if value != "info":  # the default needs no look-up (nor the logging module's import)
        from notifyctl.logs import LEVELS

        if value.lower() not in LEVELS:
            raise typer.BadParameter(f"unknown log level '{value}' (known: {', '.join(LEVELS)})")
    return value


def global_options(
    ctx: typer.Context,
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
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.", callback=_known_log_level)
    ] = "info",
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="Log each run's events as JSON lines on stderr (or --log-file); -vv: each attempt too.",
        ),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or summaries; errors only (and --json output).")
    ] = False,
) -> None:
    """notifyctl: multi-channel notifications."""
    options = ctx.ensure_object(Options)
    options.config_path = config
    options.log_level = log_level
    options.log_file = log_file
    options.verbose = verbose
    options.quiet = quiet
    if quiet or "notifyctl.cli.output" in sys.modules:  # (a process running several commands: tests)
        from notifyctl.cli import output

        output.set_quiet(quiet)


def options(cli: typer.Context) -> Options:
    """The global options of the command being run (the defaults in an app without them)."""
    found = cli.find_object(Options)
    return found if found is not None else Options()


def settings(cli: typer.Context | Options) -> Settings:
    """The settings the global options point to; with --log-file (or -v: stderr), logging goes there
    from now on."""
    from notifyctl.settings import load_settings

    chosen = cli if isinstance(cli, Options) else options(cli)
    loaded = load_settings(chosen.config_path)
    destination = chosen.logging
    if destination is not None:
        from notifyctl.logs import configure_logging
        from notifyctl.security.redaction import configured_secrets

        configure_logging(*destination, configured_secrets(loaded))
    return loaded


@contextmanager
def context(cli: typer.Context, missing: Missing = "refuse") -> Iterator[Context]:
    """The embedded Context of a command, closed after it. Only commands that store something pass
    missing="create": a command that reads never makes a database (nor its folder)."""
    from notifyctl.app.context import Context

    ctx = Context.open(settings(cli), missing=missing)
    try:
        yield ctx
    finally:
        ctx.conn.close()


@contextmanager
def open_context(cli: typer.Context, redis_url: str | None, missing: Missing = "refuse") -> Iterator[Context]:
    """The command's Context: embedded without a URL, on the cluster with one (--redis): its engine
    publishes to the cluster instead of sending in-process."""
    if not redis_url:
        with context(cli, missing) as ctx:
            yield ctx
        return
    from notifyctl.app.context import Context
    from notifyctl.backends.redis.coordinator import ClusterOptions

    cluster_ctx = Context.open(settings(cli), cluster=ClusterOptions(redis_url), missing=missing)
    try:
        yield cluster_ctx
    finally:
        cluster_ctx.conn.close()


# --- errors, output, async ------------------------------------------------------------------------


def machine_output(json_flag: bool) -> bool:
    """JSON exactly when --json is given, piped or not: the one rule, output.wants_json."""
    from notifyctl.cli import output

    return output.wants_json(json_flag)


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
    """A clear message on stderr (with the rejected rows of bad input) and exit code 2."""
    from notifyctl.cli import output

    rows = exc.rows if isinstance(exc, InputError) else []
    output.error(str(exc), rows)
    raise typer.Exit(EXIT_USAGE)


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


# --- a run's outcome ------------------------------------------------------------------------------


def outcome_payload(outcome: RunOutcome) -> dict[str, Any]:
    """A run's outcome as JSON."""
    return {
        "run_id": outcome.run_id,
        "state": outcome.state,
        "counts": outcome.counts,
        "elapsed_s": round(outcome.elapsed_s, 3),
        "sent_this_session": outcome.sent_this_session,
        "rate_per_s": round(outcome.sent_this_session / outcome.elapsed_s, 1) if outcome.elapsed_s else 0,
        "held_in_doubt": _count(outcome, DeliveryState.in_doubt),
        "reasons": outcome.reasons,
        "rejected_rows": outcome.rejected_rows,
        "problems": outcome.problems,
    }


def _count(outcome: RunOutcome, state: DeliveryState) -> int:
    return sum(states.get(state, 0) for states in outcome.counts.values())


def _failed(outcome: RunOutcome) -> int:
    """Dead, or held in doubt: what makes a run exit 1."""
    return _count(outcome, DeliveryState.dead) + _count(outcome, DeliveryState.in_doubt)


def redrive_in_doubt_command(run_id: str) -> str:
    """The command that re-sends a run's deliveries held in doubt."""
    return f"notifyctl dlq redrive --run {run_id} --in-doubt"


def outcome_exit_code(outcome: RunOutcome) -> int:
    """0: everything sent or legitimately skipped/deferred; 1: some failed; 130: interrupted."""
    if _failed(outcome):
        return EXIT_FAILED
    return EXIT_INTERRUPTED if outcome.state == RunState.interrupted else EXIT_OK


def print_outcome(outcome: RunOutcome, title: str) -> None:
    """A run's outcome for a person: counts, rate, and what to do next."""
    from notifyctl.cli import output

    payload = outcome_payload(outcome)
    dead, held = _count(outcome, DeliveryState.dead), payload["held_in_doubt"]
    output.summary_table(f"{title} {outcome.run_id}: {outcome.state}", outcome.counts)
    if outcome.reasons:
        output.table("reasons", ["state:reason", "count"], sorted(outcome.reasons.items()))
    if outcome.rejected_rows:
        output.console.print(
            f"[yellow]{outcome.rejected_rows} input row(s) rejected[/] (--skip-invalid): "
            f"see `notifyctl runs show {outcome.run_id}`"
        )
    output.console.print(f"{outcome.sent_this_session} sent in {outcome.elapsed_s:.1f}s ({payload['rate_per_s']}/s)")
    if outcome.state == RunState.interrupted:
        output.console.print(f"[yellow]Interrupted. Resume with:[/] notifyctl resume {outcome.run_id}")
    elif outcome.state == RunState.waiting:
        output.console.print(
            "Some deliveries wait for quiet hours to end; `notifyctl resume --due` "
            "(from cron) sends them when they are due."
        )
    if dead:
        output.console.print(f"[red]{dead} failed[/]: see `notifyctl dlq list --run {outcome.run_id}`")
    if held:
        output.console.print(
            f"[yellow]{held} held in doubt[/]: the request went out and no clear answer came back, so the "
            f"provider may have delivered it (a re-send could be a duplicate). To re-send: "
            f"{redrive_in_doubt_command(outcome.run_id)}",
            soft_wrap=True,
        )


def report_problems(outcome: RunOutcome) -> None:
    """On stderr, JSON output or not: each provider the churn guard stopped, most likely by its
    configuration, and what to do once it is fixed."""
    from notifyctl.cli import output

    for problem in outcome.problems:
        output.error(f"{problem}: notifyctl dlq redrive --run {outcome.run_id}")


def delivery_outcome(delivery: dict[str, Any]) -> str:
    """What happened to one delivery and why: "sent", "skipped: duplicate", "dead: TransientError"."""
    return f"{delivery['state']}: {delivery['reason']}" if delivery["reason"] else str(delivery["state"])


def report_outcome(
    outcome: RunOutcome, json_out: bool, title: str, deliveries: list[dict[str, Any]] | None = None
) -> None:
    """Print a run's result (with `deliveries`: each one, its outcome and ids) and exit with the
    code cron can act on."""
    from notifyctl.cli import output

    if output.wants_json(json_out):
        payload = outcome_payload(outcome)
        if deliveries is not None:
            payload["deliveries"] = [{**d, "outcome": delivery_outcome(d)} for d in deliveries]
        output.emit_json(payload)
    else:
        if deliveries:
            output.table(
                "deliveries",
                ["delivery", "channel", "outcome", "provider"],
                [(d["delivery_id"], d["channel"], delivery_outcome(d), d["provider"]) for d in deliveries],
            )
        print_outcome(outcome, title)
    report_problems(outcome)
    code = outcome_exit_code(outcome)
    if code:
        raise typer.Exit(code)


def report_dry_run(result: DryRun, json_out: bool) -> None:
    """What a run would do: counts, and the reasons for skips and deferrals."""
    from notifyctl.cli import output

    if output.wants_json(json_out):
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
