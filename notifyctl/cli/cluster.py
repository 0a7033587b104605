"""`notifyctl worker` and `notifyctl cluster status`: added to the main app by `register(app)`.

(`--redis URL` of `broadcast`, `send`, `resume` and `serve` is cli.common.open_context.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from notifyctl.cli.common import EXIT_FAILED, JsonOpt, guarded, machine_output, settings

if TYPE_CHECKING:
    from notifyctl.backends.redis.status import ClusterStatus

RedisOpt = Annotated[str, typer.Option("--redis", help="Redis URL, e.g. redis://HOST:6379/0.")]


def register(app: typer.Typer) -> None:
    """Add `worker` and the `cluster` sub-app to the notifyctl command."""
    cluster_app = typer.Typer(
        help="Scale-out on Redis: see what the workers are doing.\n\n"
        "Example: notifyctl cluster status --redis redis://10.0.0.5:6379/0",
        no_args_is_help=True,
    )
    app.command("worker")(guarded(worker))
    cluster_app.command("status")(guarded(status))
    app.add_typer(cluster_app, name="cluster")


def _host_of(redis_url: str) -> str:
    """The URL without credentials, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


@contextmanager
def _reachable(redis_url: str) -> Iterator[None]:
    """Redis down or unreachable: a clear message (exit 2), not a traceback."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from notifyctl.errors import ConfigError

    try:
        yield
    except RedisConnectionError as exc:
        raise ConfigError(f"cannot reach Redis at {_host_of(redis_url)}: {exc}", key="--redis") from exc


def worker(
    cli: typer.Context,
    redis: RedisOpt,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="Channel to consume (repeatable); default: all configured.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Deliveries in progress per channel; default: the providers' concurrency.")
    ] = None,
    visibility_timeout: Annotated[
        float, typer.Option(help="Seconds after which a silent worker's deliveries are taken over.")
    ] = 30.0,
) -> None:
    """Send deliveries published by `broadcast/send --redis` through this machine's providers.
    Run any number of them; SIGTERM finishes the requests in flight and leaves the rest to the others.

    Example: notifyctl worker --redis redis://10.0.0.5:6379/0 --channel email --concurrency 64
    """
    from notifyctl.backends.redis.worker import WorkerOptions, run_worker
    from notifyctl.cli import output
    from notifyctl.errors import InputError

    loaded = settings(cli)
    unknown = [c for c in channel or [] if c not in loaded.channels]
    if unknown:
        raise InputError(f"no provider is configured for channel(s) {', '.join(unknown)} in {loaded.source}")
    options = WorkerOptions(
        redis_url=redis, channels=channel, concurrency=concurrency, visibility_timeout_s=visibility_timeout
    )
    output.err_console.print(
        f"notifyctl worker: consuming {', '.join(channel or list(loaded.channels))} from {_host_of(redis)}",
        highlight=False,
        markup=False,
    )
    with _reachable(redis):
        done = run_worker(loaded, options)
    output.err_console.print(f"notifyctl worker: stopped ({done.sent} sent, {done.failed} failed)", markup=False)


def status(cli: typer.Context, redis: RedisOpt, json_out: JsonOpt = False) -> None:
    """Workers alive, stream depth per channel, pending deliveries per worker, rate per provider, and
    the runs at the workers with why any of them cannot move. Exit 1 when a run is stalled or Redis
    cannot be reached (then the runs this database published there are listed as stalled).

    Example: notifyctl cluster status --redis redis://10.0.0.5:6379/0 --json
    """
    from redis.exceptions import ConnectionError as RedisConnectionError

    from notifyctl import aio
    from notifyctl.backends.redis.status import cluster_status, unreachable

    try:
        snapshot = aio.run(cluster_status(redis))
    except (RedisConnectionError, OSError) as exc:
        snapshot = unreachable(_published_runs(cli, redis), f"cannot reach {_host_of(redis)}: {exc}")
    if machine_output(json_out):
        from notifyctl.cli import output

        output.emit_json(snapshot.as_dict())
    else:
        _print_status(snapshot)
    if not snapshot.reachable or any(run.stalled for run in snapshot.runs):
        raise typer.Exit(EXIT_FAILED)


def _published_runs(cli: typer.Context, redis_url: str) -> list[str]:
    """The runs this installation's database published to that Redis (none when it has no database)."""
    from notifyctl.app.directory import cluster_runs

    return cluster_runs(settings(cli), redis_url)


def _print_status(snapshot: ClusterStatus) -> None:
    from notifyctl.cli import output

    if not snapshot.reachable:
        output.error((snapshot.runs[0].stalled if snapshot.runs else None) or "redis unreachable")
    output.table(
        f"runs at the workers: {len(snapshot.runs)}",
        ["run", "at workers", "channels", "coordinator seen (s)", "stalled"],
        [[r.run_id, r.at_workers, ",".join(r.channels), r.coordinator_seen_s, r.stalled or ""] for r in snapshot.runs],
    )

    output.table(
        f"workers alive: {len(snapshot.workers)}",
        ["worker", "channels", "in progress", "sent", "failed", "last seen (s)"],
        [
            [w.name, ",".join(w.channels), sum(w.in_progress.values()), w.sent, w.failed, w.last_seen_s]
            for w in snapshot.workers
        ],
    )
    output.table(
        "streams",
        ["channel", "depth", "waiting", "pending", "pending per worker"],
        [
            [s.channel, s.depth, s.waiting, s.pending, " ".join(f"{k}={v}" for k, v in s.pending_by_consumer.items())]
            for s in snapshot.streams
        ],
    )
    output.table(
        "providers",
        ["provider", "rate (/s, last 5 s)", "limit (/s)", "burst"],
        [[p.provider, p.rate_per_s, p.limit_per_s, p.burst] for p in snapshot.providers],
    )
