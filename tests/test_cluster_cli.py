"""The scale-out as an operator runs it: `notifyctl worker`, `broadcast --redis`, `suppress add --redis`,
`cluster status`, all through the `notifyctl` command."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.redis_server import RedisServer, redis_server  # noqa: F401
from tests.test_cluster_run import cluster_workspace, deliveries
from tests.webhook_sink import WebhookSink
from tests.workspace import Workspace


def broadcast_with_two_workers(
    ws: Workspace, url: str, sink: WebhookSink, while_running: Callable[[], None]
) -> dict[str, object]:
    """`notifyctl worker` ×2 and `notifyctl broadcast --redis`; `while_running` runs once ten
    requests have reached the sink. Returns the broadcast's JSON summary."""
    workers = [ws.popen("worker", "--redis", url, "--concurrency", "4") for _ in range(2)]
    try:
        coordinator = ws.popen("broadcast", "c.toml", "--redis", url, "--json")
        deadline = time.monotonic() + 30
        while len(sink.requests) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        while_running()
        out, err = coordinator.communicate(timeout=60)
        assert coordinator.returncode == 0, err.decode()
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.communicate(timeout=20)
    summary: dict[str, object] = orjson.loads(out)
    return summary


def test_broadcast_on_the_cluster_through_the_cli(
    tmp_path: Path,
    webhook_sink: WebhookSink,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    n = 60
    ws = cluster_workspace(tmp_path, webhook_sink, n, rate=30.0, burst=3)
    url = redis_server.url
    # A STOP for the last ten users while the run goes on: no worker sends to them afterwards.
    stopped = {f"u{i}" for i in range(n - 9, n + 1)}
    stopped_at: list[float] = []

    def stop_and_look() -> None:
        for user in sorted(stopped):
            added = ws.run("suppress", "add", "webhook", webhook_sink.url(f"/{user}"), "--reason", "stop")
            assert added.returncode == 0, added.stderr
        stopped_at.append(time.time())
        status = ws.run("cluster", "status", "--redis", url, "--json")
        assert status.returncode == 0, status.stderr
        assert len(orjson.loads(status.stdout)["workers"]) == 2

    summary = broadcast_with_two_workers(ws, url, webhook_sink, stop_and_look)
    assert summary["state"] == "completed"
    rows = deliveries(ws)
    reached = {r.path.lstrip("/") for r in webhook_sink.requests}
    late = [r for r in webhook_sink.requests if r.path.lstrip("/") in stopped and r.received_at > stopped_at[0]]
    assert late == []
    assert {u for u, row in rows.items() if row["state"] == "sent"} == reached
    assert all(row["state"] in ("sent", "skipped") for row in rows.values())
    assert all(r.verified for r in webhook_sink.requests)


def test_a_suppression_written_only_to_the_database_reaches_every_worker(
    tmp_path: Path,
    webhook_sink: WebhookSink,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """What an inbound STOP at `serve` or a plain `suppress add` does: SQLite only. The coordinator
    mirrors it to Redis, so the workers stop before their next send, not only the next publish."""
    n = 60
    ws = cluster_workspace(tmp_path, webhook_sink, n, rate=10.0, burst=2)
    stopped = {f"u{i}" for i in range(n - 19, n + 1)}
    stopped_at: list[float] = []

    def stop_in_the_database_only() -> None:
        for user in sorted(stopped):
            assert ws.cli("suppress", "add", "webhook", webhook_sink.url(f"/{user}"), "--reason", "stop").exit_code == 0
        stopped_at.append(time.time())

    summary = broadcast_with_two_workers(ws, redis_server.url, webhook_sink, stop_in_the_database_only)
    late = [r for r in webhook_sink.requests if r.path.lstrip("/") in stopped and r.received_at > stopped_at[0]]
    assert late == []
    rows = deliveries(ws)
    assert {rows[u]["reason"] for u in stopped if rows[u]["state"] == "skipped"} == {"suppressed:stop"}
    assert summary["state"] == "completed"
