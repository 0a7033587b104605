"""`notifyctl consume`: added to the main app by `register(app)`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from notifyctl.cli.common import EXIT_OK, JsonOpt, guarded, machine_output, open_context, run_async, settings

if TYPE_CHECKING:
    from notifyctl.app.consume import ConsumeStats
    from notifyctl.app.context import Context
    from notifyctl.intake.kafka import KafkaTarget


def register(app: typer.Typer) -> None:
    """Add `consume` to the notifyctl command."""
    app.command("consume")(guarded(consume))


def consume(
    cli: typer.Context,
    servers: Annotated[
        str | None,
        typer.Option("--kafka", help="Bootstrap servers, HOST:PORT[,HOST:PORT] ([kafka] bootstrap_servers)."),
    ] = None,
    topic: Annotated[str | None, typer.Option(help="The events topic ([kafka] topic, notification.events).")] = None,
    group: Annotated[str | None, typer.Option(help="The consumer group ([kafka] group, notifyctl).")] = None,
    dlq_topic: Annotated[
        str | None, typer.Option("--dlq-topic", help="Where invalid events go ([kafka] dlq_topic, TOPIC.dlq).")
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning", help="Read every partition from its start (replay: sent events are duplicates)."
        ),
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Print the group's lag per partition and exit (consumes nothing).")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", help="Serve Prometheus metrics (lag per partition) on this port.", min=0),
    ] = None,
    redis: Annotated[
        str | None, typer.Option("--redis", help="Deliver through the cluster's workers (redis://HOST:6379/0).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Consume NotificationRequested events from Kafka (JSON: user_id, template, event_id, channels,
    data, category) until SIGTERM. Offsets are committed once the events are in the outbox; an event
    seen again is skipped as a duplicate; invalid events go to the dead-letter topic.

    Example: notifyctl consume --kafka 127.0.0.1:9092 --topic notification.events --group notifyctl
    """
    from notifyctl.intake.kafka import target

    where = target(settings(cli).kafka, servers, topic, group, dlq_topic)
    if status:
        _status(cli, where, json_out)
        return
    with open_context(cli, redis) as ctx:
        stats = run_async(_consume(ctx, where, from_beginning, metrics_port))
    _report(stats, json_out)
    raise typer.Exit(EXIT_OK)


async def _consume(ctx: Context, where: KafkaTarget, from_beginning: bool, metrics_port: int | None) -> ConsumeStats:
    """Until the first SIGINT/SIGTERM (a second one aborts)."""
    import asyncio
    import signal

    from notifyctl.app.consume import KafkaIntake
    from notifyctl.cli import output
    from notifyctl.cli.server import _configure_logging

    _configure_logging()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    intake = KafkaIntake(ctx, where, from_beginning=from_beginning)
    metrics: Any = None
    if metrics_port is not None:
        from notifyctl.server.consume_metrics import start_metrics

        metrics = await start_metrics(intake, metrics_port)
        output.err_console.print(
            f"notifyctl consume: metrics on {metrics.url}", highlight=False, markup=False, soft_wrap=True
        )

    def ready(run_id: str) -> None:
        output.err_console.print(
            f"notifyctl consume: consuming {where.topic} from {','.join(where.bootstrap_servers)} "
            f"(group {where.group}, dead letters to {where.dlq_topic}, run {run_id})",
            highlight=False,
            markup=False,
            soft_wrap=True,  # one line, whatever the terminal's width: scripts wait for it
        )

    try:
        return await intake.run(stop, ready)
    finally:
        if metrics is not None:
            await metrics.close()


def _report(stats: ConsumeStats, json_out: bool) -> None:
    from notifyctl.cli import output

    payload = {
        "run_id": stats.run_id,
        "consumed": stats.consumed,
        "planned": stats.planned,
        "dead_lettered": stats.dead_lettered,
        "pauses": stats.pauses,
    }
    if machine_output(json_out):
        output.emit_json(payload)
    else:
        output.table("consume", ["run", "consumed", "planned", "dead-lettered", "pauses"], [tuple(payload.values())])


def _status(cli: typer.Context, where: KafkaTarget, json_out: bool) -> None:
    from notifyctl.app.consume_status import group_lag
    from notifyctl.cli import output

    lags = run_async(group_lag(settings(cli), where))
    rows = [{"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag} for p in lags]
    if machine_output(json_out):
        output.emit_json(
            {"topic": where.topic, "group": where.group, "partitions": rows, "lag": sum(p.lag for p in lags)}
        )
    else:
        output.table(
            f"{where.topic} (group {where.group})",
            ["partition", "committed", "end", "lag"],
            [(r["partition"], "-" if r["committed"] is None else r["committed"], r["end"], r["lag"]) for r in rows],
        )
