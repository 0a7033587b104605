"""`notifyctl worker`: take published deliveries from the per-channel streams and send them.

Each worker reads its channels' streams through the `workers` consumer group and runs every
delivery through the pipeline's Sender, the same one the embedded engine runs, with what differs
behind the backend interfaces: the shared Redis token buckets, claims made in Redis (the
revocations written by opt-outs and the idempotency keys of other databases checked, and this
worker's provider call recorded, in one Lua call: claims.py), and a sink that reports every
outcome to the coordinator's outcome stream, acknowledging the entry in the same transaction.

A worker makes one attempt per entry: retries go back through the coordinator, which decides and
publishes them again. An entry a dead worker left behind is taken over (XAUTOCLAIM) after the
visibility timeout: if its provider call was recorded, its outcome is unknown and reported so (the
coordinator re-sends it where the receiver dedupes, and holds it otherwise); if not, it is simply
sent. An entry delivered `max_deliveries` times without an outcome (a poison message that keeps
killing workers) is reported dead. A lost connection to Redis is retried with backoff; the worker
keeps running and says so in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from notifyctl import aio
from notifyctl.backends.redis.buckets import RedisTokenBucket
from notifyctl.backends.redis.claims import CallClaims
from notifyctl.backends.redis.connection import Outage, retrying
from notifyctl.backends.redis.reporting import Entry, RedisClaims, RedisSink
from notifyctl.backends.redis.streams import (
    WORKERS_GROUP,
    DeliveryMessage,
    Keys,
    claimed_entries,
    connect,
    ensure_group,
    stream_entries,
)
from notifyctl.errors import PermanentError
from notifyctl.pipeline import outcomes
from notifyctl.pipeline.backend import Bucket
from notifyctl.pipeline.router import CircuitBreaker
from notifyctl.pipeline.sender import Sender
from notifyctl.providers.accounts import open_account
from notifyctl.providers.base import Provider
from notifyctl.security.redaction import Scrubber
from notifyctl.settings import Settings

log = logging.getLogger("notifyctl.redis.worker")


@dataclass
class WorkerOptions:
    redis_url: str
    channels: list[str] | None = None  # default: every configured channel
    concurrency: int | None = None  # deliveries in progress per channel; default: the providers' concurrency
    visibility_timeout_s: float = 30.0  # idle time after which another worker takes an entry over
    heartbeat_ttl_s: float = 10.0
    block_ms: int = 500
    max_deliveries: int = 5  # an entry delivered more often without an outcome is a poison message
    name: str | None = None
    keys: Keys = field(default_factory=Keys)


class Worker:
    def __init__(
        self, settings: Settings, options: WorkerOptions, providers: dict[str, Provider] | None = None
    ) -> None:
        self.settings = settings
        self.options = options
        self.keys = options.keys
        self.name = options.name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.channels = [c for c in (options.channels or list(settings.channels)) if c in settings.channels]
        self.providers: dict[str, Provider] = dict(providers or {})
        self._owned: list[Provider] = []
        self.stopping = asyncio.Event()
        self.outage = Outage(log, f"worker {self.name}")
        self.sent = 0
        self.failed = 0
        self.started = time.time()
        self._entries: dict[tuple[str, int], Entry] = {}
        self._busy: dict[str, int] = {}
        self._freed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        assert self._client is not None, "worker not started"
        return self._client

    def stop(self) -> None:
        """Stop taking work; attempts in flight finish and are reported, the rest is left for others."""
        self.stopping.set()

    def entry(self, run_id: str, delivery_id: int) -> Entry:
        return self._entries[(run_id, delivery_id)]

    # --- set-up ---------------------------------------------------------------------------------

    async def _open(self) -> Sender:
        breakers: dict[str, CircuitBreaker] = {}
        buckets: dict[str, Bucket] = {}
        for channel in self.channels:
            for name in self.settings.channels[channel].names:
                if name in buckets:
                    continue
                conf = self.settings.providers[name]
                if name not in self.providers:
                    self.providers[name] = await open_account(self.settings, name)
                    self._owned.append(self.providers[name])
                buckets[name] = RedisTokenBucket(self.client, name, conf.rate, conf.bucket_size, self.keys, self.outage)
                breakers[name] = CircuitBreaker(self.settings.breaker)
        self.calls = CallClaims(self.client, self.name, self.settings.idempotency_window_hours * 3600, self.keys)
        settings = self.settings
        return Sender(
            self.providers,
            buckets,
            breakers,
            {n: settings.providers[n].concurrency for n in buckets},
            settings.retry,
            RedisClaims(self),
            RedisSink(self),
            self.stopping.is_set,
            lambda provider: outcomes.resend_in_doubt(settings, provider),
            scrubber=Scrubber.from_settings(settings),
        )

    def _capacity(self, channel: str) -> int:
        if self.options.concurrency:
            return self.options.concurrency
        return sum(self.settings.providers[n].concurrency for n in self.settings.channels[channel].names)

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until stop(); then finish what is in flight and leave."""
        self._client = connect(self.options.redis_url)
        try:
            self.sender = await self._open()
            for channel in self.channels:
                self._busy[channel] = 0
                self._freed[channel] = asyncio.Event()
            loops = [asyncio.create_task(self._keep_alive(), name="keep-alive")]
            for channel in self.channels:
                loops.append(asyncio.create_task(self._read(channel), name=f"read-{channel}"))
                loops.append(asyncio.create_task(self._reclaim(channel), name=f"reclaim-{channel}"))
            stopped = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.stopping.set()
                stopped.cancel()
                for task in loops:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                results = await asyncio.gather(*loops, return_exceptions=True)
            failures = [r for r in results if isinstance(r, Exception)]
            if failures:
                raise failures[0]
        finally:
            for provider in self._owned:
                with contextlib.suppress(Exception):
                    await provider.close()
            with contextlib.suppress(Exception):
                await self.client.delete(self.keys.worker(self.name))
            await self.client.aclose()

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when the worker is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, seconds))
        return self.stopping.is_set()

    async def _heartbeat(self) -> None:
        beat = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "channels": self.channels,
            "started": self.started,
            "seen": time.time(),
            "in_progress": dict(self._busy),
            "sent": self.sent,
            "failed": self.failed,
        }
        ttl_ms = int(self.options.heartbeat_ttl_s * 1000)
        await self.client.set(self.keys.worker(self.name), orjson.dumps(beat).decode(), px=ttl_ms)

    async def _keep_alive(self) -> None:
        """Heartbeat, and keep this worker's own entries from looking abandoned."""
        every = min(self.options.heartbeat_ttl_s, self.options.visibility_timeout_s) / 3
        while True:
            await retrying(self._beat_once, self.outage, self.stopping)
            if await self._stopped_within(every):
                return

    async def _beat_once(self) -> None:
        await self._heartbeat()
        by_stream: dict[str, list[str]] = {}
        for entry in list(self._entries.values()):
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        for stream, ids in by_stream.items():
            with contextlib.suppress(ResponseError):  # the group went with Redis's data
                await self.client.xclaim(stream, WORKERS_GROUP, self.name, 0, list[Any](ids), justid=True)

    def _free(self, channel: str) -> int:
        return self._capacity(channel) - self._busy[channel]

    def _spawn(self, channel: str, entry_id: str, fields: dict[str, str], claimed: bool) -> None:
        self._busy[channel] += 1

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._busy[channel] -= 1
            self._freed[channel].set()
            if not task.cancelled() and task.exception() is not None:
                log.error("delivery %s failed in the worker", entry_id, exc_info=task.exception())

        task = asyncio.create_task(self._handle(channel, entry_id, fields, claimed))
        self._tasks.add(task)
        task.add_done_callback(done)

    async def _read_some(self, stream: str, count: int) -> list[tuple[str, dict[str, str]]]:
        try:
            answer = await self.client.xreadgroup(
                WORKERS_GROUP, self.name, {stream: ">"}, count=count, block=self.options.block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await ensure_group(self.client, stream, WORKERS_GROUP)  # new, or gone with Redis's data
            return []
        return stream_entries(answer)

    async def _read(self, channel: str) -> None:
        stream = self.keys.deliveries(channel)
        while not self.stopping.is_set():
            free = self._free(channel)
            if free <= 0:
                self._freed[channel].clear()
                await self._wait_any(self._freed[channel].wait(), self.stopping.wait())
                continue
            try:
                read = functools.partial(self._read_some, stream, free)
                entries = await retrying(read, self.outage, self.stopping)
            except Exception:
                if self.stopping.is_set():
                    return
                raise
            for entry_id, fields in entries:
                if self.stopping.is_set():
                    return  # read but not started: another worker takes it after the visibility timeout
                if fields:
                    self._spawn(channel, entry_id, fields, claimed=False)
                else:  # deleted after it was delivered to us
                    await retrying(functools.partial(self.client.xack, stream, WORKERS_GROUP, entry_id), self.outage)

    async def _reclaim(self, channel: str) -> None:
        """Take over entries whose worker went quiet for longer than the visibility timeout."""
        stream = self.keys.deliveries(channel)
        idle_ms = int(self.options.visibility_timeout_s * 1000)
        while not await self._stopped_within(self.options.visibility_timeout_s / 4):
            free = self._free(channel)
            if free <= 0:
                continue
            try:
                take = functools.partial(
                    self.client.xautoclaim, stream, WORKERS_GROUP, self.name, idle_ms, "0-0", count=free
                )
                answer = await retrying(take, self.outage, self.stopping)
            except ResponseError:  # no group yet (or gone with Redis's data): the reader creates it
                continue
            except Exception:
                if self.stopping.is_set():
                    return
                raise
            for entry_id, fields in claimed_entries(answer):
                if fields:
                    self._spawn(channel, entry_id, fields, claimed=True)

    @staticmethod
    async def _wait_any(*waits: Awaitable[Any]) -> None:
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()

    # --- one delivery ---------------------------------------------------------------------------

    async def _handle(self, channel: str, entry_id: str, fields: dict[str, str], claimed: bool) -> None:
        stream = self.keys.deliveries(channel)
        try:
            message = DeliveryMessage.decode(fields)
        except Exception:  # nothing to report to: drop it, loudly
            log.error("undecodable delivery %s on %s dropped", entry_id, stream, exc_info=True)
            await retrying(lambda: self.client.xack(stream, WORKERS_GROUP, entry_id), self.outage)
            return
        envelope = message.envelope
        key = (envelope.run_id, envelope.delivery_id)
        entry = Entry(stream, entry_id, message, asyncio.get_running_loop().create_future())
        self._entries[key] = entry
        try:
            if await self._deliver(entry, claimed):
                await entry.reported  # the entry is acknowledged with its outcome
        finally:
            self._entries.pop(key, None)

    async def _deliver(self, entry: Entry, claimed: bool) -> bool:
        """One attempt of the entry's delivery; False when it was left for another worker (stopping)."""
        message = entry.message
        envelope, provider, attempt = message.envelope, message.provider, message.attempt
        sink = self.sender.sink
        if claimed:
            call = f"{envelope.delivery_id}:{attempt}"
            if await retrying(lambda: self.client.hexists(self.keys.calls(message.origin), call), self.outage):
                # Its worker died during the provider call: the outcome is unknown (the coordinator
                # decides whether it is re-sent or held).
                lost = outcomes.crashed(
                    envelope.run_id, envelope.delivery_id, attempt, provider, envelope.channel, False
                )
                sink.record(lost)
                return True
            delivered = await self._times_delivered(entry)
            if delivered > self.options.max_deliveries:
                error = PermanentError(f"delivered {delivered} times to workers without an outcome", code="poison")
                sink.record(outcomes.failed(envelope, attempt, provider, error, 0.0, retry_at=None, resend=False))
                return True
        if provider not in self.providers:
            error = PermanentError(f"provider '{provider}' is not configured on worker {self.name}", code="config")
            sink.record(outcomes.failed(envelope, attempt, provider, error, 0.0, retry_at=None, resend=False))
            return True
        while True:
            result = await self.sender.transmit(envelope, provider, attempt)
            if result.state != "later":
                return result.state != "stopped"
            # Its endpoint asked for time (Retry-After): this worker keeps the entry meanwhile.
            if await self._stopped_within(result.delay_s):
                return False

    async def _times_delivered(self, entry: Entry) -> int:
        found = await retrying(
            lambda: self.client.xpending_range(entry.stream, WORKERS_GROUP, entry.entry_id, entry.entry_id, 1),
            self.outage,
        )
        return int(found[0]["times_delivered"]) if found else 0


def main(argv: list[str] | None = None) -> None:
    """`python -m notifyctl.backends.redis.worker --redis URL ...` (what `notifyctl worker` runs)."""
    import argparse
    import signal
    from pathlib import Path

    from notifyctl.logs import configure_logging
    from notifyctl.settings import load_settings

    parser = argparse.ArgumentParser(prog="notifyctl-worker")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--channel", action="append", default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--visibility-timeout", type=float, default=30.0)
    parser.add_argument("--name", default=None)
    parser.add_argument("--log-file", type=Path, default=None)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if args.log_file is not None:
        from notifyctl.security.redaction import configured_secrets

        configure_logging(args.log_level, args.log_file, configured_secrets(settings))
    options = WorkerOptions(
        redis_url=args.redis,
        channels=args.channel,
        concurrency=args.concurrency,
        visibility_timeout_s=args.visibility_timeout,
        name=args.name,
    )
    run_worker(settings, options, install_signals=signal.SIGTERM in signal.valid_signals())


def run_worker(settings: Settings, options: WorkerOptions, install_signals: bool = True) -> Worker:
    """Run a worker in this process until SIGINT/SIGTERM; returns it (counts) once it has stopped."""
    import signal

    worker = Worker(settings, options)

    async def go() -> None:
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    aio.run(go())
    return worker


if __name__ == "__main__":
    main()
