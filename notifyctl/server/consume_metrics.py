"""`notifyctl consume --metrics-port`: Prometheus metrics of the Kafka intake (text format 0.0.4).

notifyctl_kafka_consumer_lag{topic,partition}   gauge, end offset − committed offset, at the last commit
notifyctl_kafka_messages_total{outcome}         counter, messages consumed: planned | dead_lettered
notifyctl_kafka_paused                          gauge, 1 while partitions are paused (backpressure)
notifyctl_kafka_unsettled                       gauge, the run's deliveries pending or in flight
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from notifyctl.server.metrics import CONTENT_TYPE, _family, labels

if TYPE_CHECKING:
    from notifyctl.app.consume import KafkaIntake


def exposition(intake: KafkaIntake) -> str:
    stats = intake.stats
    topic = intake.where.topic
    lines = [
        *_family(
            "notifyctl_kafka_consumer_lag",
            "gauge",
            "Messages of the partition not yet committed by the group.",
            (
                f"notifyctl_kafka_consumer_lag{labels(topic=topic, partition=str(p))} {lag}"
                for p, lag in sorted(stats.lag.items())
            ),
        ),
        *_family(
            "notifyctl_kafka_messages_total",
            "counter",
            "Messages consumed, by what became of them.",
            (
                f'notifyctl_kafka_messages_total{{outcome="planned"}} {stats.planned}',
                f'notifyctl_kafka_messages_total{{outcome="dead_lettered"}} {stats.dead_lettered}',
            ),
        ),
        *_family(
            "notifyctl_kafka_paused",
            "gauge",
            "1 while the backlog pauses the partitions.",
            [f"notifyctl_kafka_paused {int(stats.paused)}"],
        ),
        *_family(
            "notifyctl_kafka_unsettled",
            "gauge",
            "Deliveries of the consumer's run pending or in flight.",
            [f"notifyctl_kafka_unsettled {intake.service.unsettled() if intake.service.run_id else 0}"],
        ),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class MetricsServer:
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_metrics(intake: KafkaIntake, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """GET /metrics on host:port (port 0: a free one, shown in the URL)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=exposition(intake).encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0] if runner.addresses else (host, port)
    return MetricsServer(runner, f"http://{bound[0]}:{bound[1]}/metrics")
