"""Cluster crashes the contract suite (which kills every sending process at once) does not reach: one
worker killed while the others go on, and the coordinator killed while the workers go on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from notifyctl.backends.redis.buckets import second_counter_prefix
from notifyctl.backends.redis.streams import Keys
from tests.redis_server import RedisServer, redis_server  # noqa: F401
from tests.webhook_sink import WebhookSink, stall
from tests.workspace import SINK_SECRET, Workspace, audience_csv, campaign_toml, make_workspace

VISIBILITY_S = 1.5
WORKER_CONCURRENCY = 8


def per_user_users_csv(sink: WebhookSink, n: int) -> str:
    """Every user gets its own endpoint path, so that the sink tells recipients apart."""
    rows = ["user_id,email,locale,first_name,webhook_url,webhook_secret"]
    rows += [f"u{i},user{i}@example.com,en,Name{i},{sink.url(f'/u{i}')},{SINK_SECRET}" for i in range(1, n + 1)]
    return "\n".join(rows) + "\n"


def cluster_workspace(
    root: Path, sink: WebhookSink, n: int, *, rate: float, burst: int, window: int | None = None
) -> Workspace:
    """Webhooks to one sink path per user; `window`: deliveries at the workers at once (queue_size)."""
    channels = {"email": "outbox", "inapp": "inapp"}
    extra = f'[channels.webhook]\nproviders = ["webhook"]\nqueue_size = {window or 1000}\n'
    ws = make_workspace(
        root,
        webhook={"rate": rate, "burst": burst, "concurrency": WORKER_CONCURRENCY},
        channels=channels,
        extra=extra,
    )
    ws.write("users.csv", per_user_users_csv(sink, n))
    ws.write("aud.csv", audience_csv(n))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["webhook"], "aud.csv"))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    return ws


def spawn(ws: Workspace, module: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFYCTL_CONFIG": str(ws.config)}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ws.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def start_coordinator(ws: Workspace, redis_url: str, *command: str) -> subprocess.Popen[bytes]:
    """`notifyctl broadcast|resume … --redis URL --json`: plans, publishes, records."""
    return spawn(ws, "notifyctl.cli", *command, "--redis", redis_url, "--json")


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    _, stderr = proc.communicate(timeout=timeout_s)
    assert proc.returncode in (0, 1), stderr.decode()
    return proc.returncode


@contextmanager
def workers(ws: Workspace, redis_url: str, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers w0, w1, …"""
    args = ("--redis", redis_url, "--visibility-timeout", str(VISIBILITY_S))
    procs = [spawn(ws, "notifyctl.backends.redis.worker", *args, "--name", f"w{i}") for i in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                _, stderr = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            assert proc.returncode in (0, -signal.SIGKILL), stderr.decode()


def only_run(ws: Workspace) -> tuple[str, str]:
    with ws.db() as conn:
        run_id, state = conn.execute("SELECT run_id, state FROM runs").fetchone()
    return run_id, state


def deliveries(ws: Workspace) -> dict[str, dict[str, Any]]:
    """Per user: the delivery row's state, reason, in_doubt flag, attempts and message id."""
    with ws.db() as conn:
        rows = conn.execute("SELECT user_id, state, reason, in_doubt, attempts, message_id FROM deliveries")
        return {row["user_id"]: dict(row) for row in rows}


def per_second(times: Sequence[float]) -> dict[int, int]:
    """Events per one-second window of the wall clock."""
    return dict(Counter(int(t) for t in times))


async def granted_per_second(redis_url: str, provider: str) -> dict[int, int]:
    """Tokens the shared bucket handed out per second of Redis's clock (kept 120 s)."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    prefix = second_counter_prefix(Keys(), provider)
    try:
        names = [name async for name in client.scan_iter(match=f"{prefix}*")]
        values = await client.mget(names) if names else []
    finally:
        await client.aclose()
    return {int(name.removeprefix(prefix)): int(str(value)) for name, value in zip(names, values, strict=True)}


async def calling(ws: Workspace, redis_url: str, worker: str, timeout_s: float = 30) -> None:
    """Wait until `worker` has a provider call recorded (claimed, outcome not yet reported)."""
    with ws.db() as conn:
        identity = conn.execute("SELECT identity FROM cluster_runs").fetchone()[0]
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout_s
        while worker not in (await client.hvals(Keys().calls(identity))):
            assert time.monotonic() < deadline, f"{worker} never had a call in flight"
            await asyncio.sleep(0.005)
    finally:
        await client.aclose()


async def wait_for_requests(sink: WebhookSink, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while len(sink.requests) < count:
        assert time.monotonic() < deadline, f"only {len(sink.requests)} requests arrived"
        await asyncio.sleep(0.01)


async def test_a_worker_killed_mid_run_loses_nothing(
    tmp_path: Path,
    webhook_sink: WebhookSink,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    n = 150
    ws = cluster_workspace(tmp_path, webhook_sink, n, rate=60.0, burst=5)
    for i in range(31, 91):  # slow answers: the killed worker surely has requests in flight
        webhook_sink.on_path(f"/u{i}", stall(0.4))
    with workers(ws, redis_server.url, 3) as procs:
        coordinator = start_coordinator(ws, redis_server.url, "broadcast", "c.toml")
        await wait_for_requests(webhook_sink, 40)
        await calling(ws, redis_server.url, "w0")  # w0 is between its claim and its outcome
        procs[0].send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(finish, coordinator) == 0
    assert only_run(ws)[1] == "completed"
    rows = deliveries(ws)
    assert {row["state"] for row in rows.values()} == {"sent"}  # webhooks dedupe: in-doubt ones were re-sent
    at_sink = Counter(r.path.lstrip("/") for r in webhook_sink.requests)
    assert set(at_sink) == set(rows)  # every recipient reached
    in_doubt = {user for user, row in rows.items() if row["in_doubt"]}
    assert 1 <= len(in_doubt) <= WORKER_CONCURRENCY  # bounded by what the dead worker had in flight
    for user, row in rows.items():
        if user in in_doubt:  # the lost attempt may or may not have reached the sink
            assert row["attempts"] - 1 <= at_sink[user] <= row["attempts"]
        else:
            assert at_sink[user] == row["attempts"] == 1, user
    ids = {r.path.lstrip("/"): r.webhook_id for r in webhook_sink.requests}
    assert all(ids[user] == row["message_id"] for user, row in rows.items())  # a re-send keeps its webhook-id


async def test_a_killed_coordinator_resumes_with_the_outcomes_reported_meanwhile(
    tmp_path: Path,
    webhook_sink: WebhookSink,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    n = 100
    ws = cluster_workspace(tmp_path, webhook_sink, n, rate=50.0, burst=5, window=60)
    with workers(ws, redis_server.url, 2):
        coordinator = start_coordinator(ws, redis_server.url, "broadcast", "c.toml")
        await wait_for_requests(webhook_sink, 25)
        coordinator.send_signal(signal.SIGKILL)
        coordinator.communicate()
        await wait_for_requests(webhook_sink, 50)  # the workers went on, reporting to nobody
        run_id, state = only_run(ws)
        assert state == "running"
        assert await asyncio.to_thread(finish, start_coordinator(ws, redis_server.url, "resume", run_id)) == 0
    assert only_run(ws)[1] == "completed"
    rows = deliveries(ws)
    assert {row["state"] for row in rows.values()} == {"sent"}
    at_sink = Counter(r.path.lstrip("/") for r in webhook_sink.requests)
    assert at_sink == {user: 1 for user in rows}  # nothing re-published, nothing lost
    assert all(row["attempts"] == 1 for row in rows.values())
