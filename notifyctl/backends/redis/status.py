"""`notifyctl cluster status`: workers alive, stream depth per channel, pending per consumer, rate per
provider, and the runs at the workers: each with its coordinator's heartbeat and, when it cannot
move, why (no coordinator, no live worker for one of its channels, Redis unreachable)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from notifyctl.backends.redis.buckets import recent_rate
from notifyctl.backends.redis.streams import WORKERS_GROUP, Keys, connect


@dataclass
class WorkerStatus:
    name: str
    host: str
    pid: int
    channels: list[str]
    in_progress: dict[str, int]
    sent: int
    failed: int
    last_seen_s: float  # seconds since its last heartbeat


@dataclass
class StreamStatus:
    channel: str
    depth: int  # entries in the stream: waiting, or taken and not yet finished
    waiting: int  # not yet delivered to any worker
    pending: int  # delivered to a worker, no final outcome yet
    pending_by_consumer: dict[str, int] = field(default_factory=dict)


@dataclass
class ProviderStatus:
    provider: str
    rate_per_s: float  # tokens taken per second over the last 5 s, by every worker together
    limit_per_s: float | None
    burst: float | None


@dataclass
class RunStatus:
    run_id: str
    at_workers: int  # published, outcome not yet recorded
    channels: list[str]
    coordinator_seen_s: float | None  # seconds since its coordinator's heartbeat; None: no coordinator
    stalled: str | None  # why the run cannot move, when it cannot


@dataclass
class ClusterStatus:
    workers: list[WorkerStatus]
    streams: list[StreamStatus]
    providers: list[ProviderStatus]
    runs: list[RunStatus] = field(default_factory=list)
    reachable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _workers(client: aioredis.Redis, keys: Keys) -> list[WorkerStatus]:
    names = sorted([name async for name in client.scan_iter(match=keys.worker("*"))])
    beats = await client.mget(names) if names else []
    now = time.time()
    found: list[WorkerStatus] = []
    for beat in beats:
        if not beat:
            continue  # expired between SCAN and MGET: not alive
        data = orjson.loads(beat)
        found.append(
            WorkerStatus(
                name=data["name"],
                host=data["host"],
                pid=int(data["pid"]),
                channels=list(data["channels"]),
                in_progress=dict(data["in_progress"]),
                sent=int(data["sent"]),
                failed=int(data["failed"]),
                last_seen_s=round(max(0.0, now - float(data["seen"])), 1),
            )
        )
    return found


async def _streams(client: aioredis.Redis, keys: Keys) -> list[StreamStatus]:
    prefix = keys.deliveries("")
    names = sorted([name async for name in client.scan_iter(match=f"{prefix}*", _type="STREAM")])
    found: list[StreamStatus] = []
    for name in names:
        depth = int(await client.xlen(name))
        try:
            summary = await client.xpending(name, WORKERS_GROUP)
        except ResponseError:  # no group yet: nobody has consumed from it
            found.append(StreamStatus(name.removeprefix(prefix), depth, depth, 0))
            continue
        by_consumer = {str(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}
        pending = int(summary.get("pending") or 0)
        found.append(StreamStatus(name.removeprefix(prefix), depth, max(0, depth - pending), pending, by_consumer))
    return found


async def _providers(client: aioredis.Redis, keys: Keys) -> list[ProviderStatus]:
    prefix, suffix = keys.rate(""), ":conf"
    names = sorted([name async for name in client.scan_iter(match=f"{prefix}*{suffix}")])
    found: list[ProviderStatus] = []
    for name in names:
        provider = name.removeprefix(prefix).removesuffix(suffix)
        conf = await client.hgetall(name)
        found.append(
            ProviderStatus(
                provider=provider,
                rate_per_s=round(await recent_rate(client, provider, keys), 1),
                limit_per_s=float(conf["rate"]) if "rate" in conf else None,
                burst=float(conf["burst"]) if "burst" in conf else None,
            )
        )
    return found


async def _runs(client: aioredis.Redis, keys: Keys, workers: list[WorkerStatus]) -> list[RunStatus]:
    prefix, suffix = keys.published(""), ":published"
    head = prefix.removesuffix(suffix)
    found: list[RunStatus] = []
    serving = {channel for worker in workers for channel in worker.channels}
    for name in sorted([name async for name in client.scan_iter(match=f"{head}*{suffix}")]):
        run_id = name.removeprefix(head).removesuffix(suffix)
        published = await client.hgetall(name)
        beat = await client.get(keys.coordinator(run_id))
        heartbeat = orjson.loads(beat) if beat else None
        at_workers = {str(channel) for channel in published.values()}
        channels = sorted(at_workers | set(heartbeat["channels"] if heartbeat else []))
        stalled = None
        if heartbeat is None:
            stalled = f"no coordinator: run `notifyctl resume {run_id} --redis URL`"
        elif published and not workers:
            stalled = "no worker alive"
        elif missing := [c for c in sorted(at_workers) if c not in serving]:
            stalled = f"no worker alive for channel {', '.join(missing)}"
        seen = round(max(0.0, time.time() - float(heartbeat["seen"])), 1) if heartbeat else None
        found.append(RunStatus(run_id, len(published), channels, seen, stalled))
    return found


async def cluster_status(redis_url: str, keys: Keys | None = None) -> ClusterStatus:
    """A snapshot of the cluster, read from Redis only."""
    keys = keys or Keys()
    client = connect(redis_url)
    try:
        workers = await _workers(client, keys)
        streams, providers = await _streams(client, keys), await _providers(client, keys)
        return ClusterStatus(workers, streams, providers, await _runs(client, keys, workers))
    finally:
        await client.aclose()


def unreachable(run_ids: list[str], error: str) -> ClusterStatus:
    """What can be said while Redis is unreachable: the runs this database published there are stalled."""
    stalled = f"redis unreachable: {error}"
    return ClusterStatus([], [], [], [RunStatus(run_id, 0, [], None, stalled) for run_id in run_ids], reachable=False)
