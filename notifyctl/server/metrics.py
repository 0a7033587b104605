"""`GET /healthz` and `GET /metrics` (Prometheus text exposition format 0.0.4, written by hand).

notifyctl_deliveries_total{channel,state}       counter, from the outbox
notifyctl_queue_depth{channel}                  gauge, the engine's lane queues
notifyctl_provider_latency_ms{provider,quantile} summary over the latest attempts (+ _sum, _count)
notifyctl_engine_up                             gauge, 1 while the delivery engine runs
notifyctl_api_unsettled                         gauge, deliveries accepted by the API not yet settled
notifyctl_api_refused_total{reason="backpressure"} counter, POST /v1/notify answered 503 (max_pending)
notifyctl_kafka_consumer_lag{group,topic,partition} gauge, `notifyctl consume`'s lag on this database
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable

from aiohttp import web

from notifyctl.server.state import ServerState, state_of
from notifyctl.store import health, kafka_lag

routes = web.RouteTableDef()

QUANTILES = (0.5, 0.9, 0.99)
KAFKA_LAG_MAX_AGE_S = 600.0  # a consumer that has not committed for this long is not running
LATENCY_WINDOW = 10_000  # attempts per provider the quantiles are computed over
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**pairs: str) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs.items()) + "}"


def number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list."""
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def deliveries_lines(conn: sqlite3.Connection) -> list[str]:
    rows = health.delivery_counts(conn)
    return _family(
        "notifyctl_deliveries_total",
        "counter",
        "Deliveries in the outbox by channel and state.",
        (f"notifyctl_deliveries_total{labels(channel=c, state=s)} {n}" for c, s, n in rows),
    )


def latency_lines(conn: sqlite3.Connection) -> list[str]:
    samples: list[str] = []
    for provider, count, total in health.latency_totals(conn):
        recent = sorted(health.recent_latencies(conn, provider, LATENCY_WINDOW))
        for q in QUANTILES:
            samples.append(
                f"notifyctl_provider_latency_ms{labels(provider=provider, quantile=str(q))} "
                f"{number(round(quantile(recent, q), 3))}"
            )
        samples.append(f"notifyctl_provider_latency_ms_sum{labels(provider=provider)} {number(round(total, 3))}")
        samples.append(f"notifyctl_provider_latency_ms_count{labels(provider=provider)} {count}")
    return _family("notifyctl_provider_latency_ms", "summary", "Provider call latency in milliseconds.", samples)


def exposition(state: ServerState) -> str:
    conn = state.ctx.conn
    depths = state.service.queue_depths()
    lines = [
        *deliveries_lines(conn),
        *_family(
            "notifyctl_queue_depth",
            "gauge",
            "Deliveries queued in the engine's lane for a channel.",
            (f"notifyctl_queue_depth{labels(channel=c)} {n}" for c, n in sorted(depths.items())),
        ),
        *latency_lines(conn),
        *_family(
            "notifyctl_engine_up",
            "gauge",
            "1 while the delivery engine runs.",
            [f"notifyctl_engine_up {int(state.service.running)}"],
        ),
        *_family(
            "notifyctl_api_unsettled",
            "gauge",
            "Deliveries accepted by POST /v1/notify and not yet settled (pending or in flight).",
            [f"notifyctl_api_unsettled {state.service.unsettled()}"],
        ),
        *_family(
            "notifyctl_api_refused_total",
            "counter",
            "POST /v1/notify requests refused with 503 because max_pending deliveries were waiting.",
            [f"notifyctl_api_refused_total{labels(reason='backpressure')} {state.service.backlog.refused}"],
        ),
        *_family(
            "notifyctl_kafka_consumer_lag",
            "gauge",
            "Messages of a partition not yet committed by `notifyctl consume` (as of its last commit).",
            (
                f"notifyctl_kafka_consumer_lag{labels(group=r.group, topic=r.topic, partition=str(r.p))} {r.lag}"
                for r in kafka_lag.recent(conn, KAFKA_LAG_MAX_AGE_S)
            ),
        ),
    ]
    return "\n".join(lines) + "\n"


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    response = web.Response(text=exposition(state_of(request)))
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    state = state_of(request)
    health.ping(state.ctx.conn)
    running = state.service.running
    return web.json_response(
        {"status": "ok" if running else "degraded", "engine": running, "run_id": state.service.run_id},
        status=200 if running else 503,
    )
