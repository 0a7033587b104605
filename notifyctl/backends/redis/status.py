"""`notifyctl cluster status`: workers alive, stream depth per channel, pending per consumer, rate per provider."""

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
class ClusterStatus:
    workers: list[WorkerStatus]
    streams: list[StreamStatus]
    providers: list[ProviderStatus]

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


async def cluster_status(redis_url: str, keys: Keys | None = None) -> ClusterStatus:
    """A snapshot of the cluster, read from Redis only."""
    keys = keys or Keys()
    client = connect(redis_url)
    try:
        return ClusterStatus(await _workers(client, keys), await _streams(client, keys), await _providers(client, keys))
    finally:
        await client.aclose()
