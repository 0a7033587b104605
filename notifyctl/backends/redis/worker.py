"""`notifyctl worker`: consume deliveries from the per-channel streams and send them.

Each worker reads its channels' streams through the `workers` consumer group and runs every
delivery through the same Sender as the embedded engine, with a RedisRecorder that reports to the
coordinator's outcome stream: the intent is written (and acknowledged by Redis) before the
provider is called, and the stream entry is acknowledged only together with a final outcome (sent,
dead, skipped, held in doubt). Transient errors are retried here, with the same backoff, in their
own task so that other messages keep moving. Entries a dead worker left behind are claimed
(XAUTOCLAIM) after the visibility timeout; one whose intent was recorded without an outcome is in
doubt: re-sent where the receiver dedupes (capabilities.idempotent, or in_doubt = "resend"), held
for the operator otherwise. A live worker keeps its own entries fresh (XCLAIM JUSTID) so that a
long backoff is never mistaken for a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from notifyctl import aio
from notifyctl.backends.redis.buckets import RedisTokenBucket
from notifyctl.backends.redis.claims import IdempotencyClaims, owner
from notifyctl.backends.redis.mirror import suppression_reason
from notifyctl.backends.redis.streams import (
    WORKERS_GROUP,
    DeliveryMessage,
    Keys,
    OutcomeEvent,
    claimed_entries,
    connect,
    ensure_group,
    stream_entries,
)
from notifyctl.errors import PermanentError, ProviderError, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.pipeline.limiter import Limiter
from notifyctl.pipeline.router import CircuitBreaker
from notifyctl.pipeline.sender import Failure, Sender
from notifyctl.providers.accounts import open_account
from notifyctl.providers.base import Provider
from notifyctl.settings import Settings

log = logging.getLogger("notifyctl.backends.redis.worker")


@dataclass
class WorkerOptions:
    redis_url: str
    channels: list[str] | None = None  # default: every configured channel
    concurrency: int | None = None  # deliveries in progress per channel; default: the providers' concurrency
    visibility_timeout_s: float = 30.0  # idle time after which another worker claims an entry
    heartbeat_ttl_s: float = 10.0
    block_ms: int = 500
    name: str | None = None
    keys: Keys = field(default_factory=Keys)


@dataclass
class Entry:
    """Where a delivery in progress came from and where its outcomes go."""

    stream: str
    entry_id: str
    outcomes: str


class _Prepaid:
    """The Sender's limiter on a worker: the shared token is taken before the suppression check (so
    the check is as late as possible), hence acquire() has nothing left to do; 429s still slow the
    shared bucket down."""

    def __init__(self, bucket: Limiter) -> None:
        self.bucket = bucket

    async def acquire(self) -> None:
        return None

    async def pace(self, n: int = 1) -> None:
        return None

    def slow_down(self, retry_after_s: float | None, for_s: float) -> None:
        self.bucket.slow_down(retry_after_s, for_s)


class RedisRecorder:
    """notifyctl.pipeline.sender.Recorder writing to the coordinator's outcome stream."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def intent(self, envelope: Envelope, attempt: int, provider: str) -> None:
        entry = self.worker.entry(envelope)
        state = orjson.dumps({"attempt": attempt, "provider": provider, "state": "inflight"}).decode()
        event = OutcomeEvent("intent", envelope.delivery_id, attempt=attempt, provider=provider)
        async with self.worker.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.worker.keys.attempts(envelope.run_id), str(envelope.delivery_id), state)
            pipe.xadd(entry.outcomes, self.worker.stamp(event).encode())
            await pipe.execute()  # returns once Redis has it: only then is the provider called

    async def sent(
        self, envelope: Envelope, attempt: int, provider: str, result: SendResult, latency_ms: float
    ) -> None:
        event = OutcomeEvent(
            "sent",
            envelope.delivery_id,
            attempt=attempt,
            provider=provider,
            latency_ms=latency_ms,
            provider_message_id=result.provider_message_id,
        )
        self.worker.sent += 1
        await self.worker.finish(envelope, event)

    async def retry(
        self, envelope: Envelope, attempt: int, provider: str, error: TransientError, latency_ms: float, due: float
    ) -> None:
        f = Failure.of(error, attempt)
        event = OutcomeEvent(
            "retry",
            envelope.delivery_id,
            attempt=attempt,
            provider=provider,
            latency_ms=latency_ms,
            outcome=f.outcome,
            code=f.code,
            error_class=f.error_class,
            message=f.message,
            due=due,
        )
        entry = self.worker.entry(envelope)
        state = orjson.dumps({"attempt": attempt, "provider": provider, "state": "retry"}).decode()
        async with self.worker.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.worker.keys.attempts(envelope.run_id), str(envelope.delivery_id), state)
            pipe.xadd(entry.outcomes, self.worker.stamp(event).encode())
            await pipe.execute()

    async def dead(
        self, envelope: Envelope, attempt: int, provider: str, error: ProviderError, latency_ms: float, gave_up: bool
    ) -> None:
        f = Failure.of(error, attempt, gave_up)
        effects: list[str] = []
        if isinstance(error, PermanentError):
            effects = [name for name in ("suppress", "remove_device", "disable_endpoint") if getattr(error, name)]
        event = OutcomeEvent(
            "dead",
            envelope.delivery_id,
            attempt=attempt,
            provider=provider,
            latency_ms=latency_ms,
            outcome=f.outcome,
            code=f.code,
            error_class=f.error_class,
            message=f.message,
            envelope=envelope.model_dump(mode="json"),
            effects=effects,
        )
        self.worker.failed += 1
        await self.worker.finish(envelope, event, suppress="suppress" in effects)


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
        self.buckets: dict[str, RedisTokenBucket] = {}
        self.stopping = asyncio.Event()
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

    def entry(self, envelope: Envelope) -> Entry:
        return self._entries[(envelope.run_id, envelope.delivery_id)]

    def stamp(self, event: OutcomeEvent) -> OutcomeEvent:
        event.worker = self.name
        return event

    # --- set-up ---------------------------------------------------------------------------------

    def _provider_names(self, channel: str) -> list[str]:
        route = self.settings.channels[channel]
        return route.names

    async def _open(self) -> Sender:
        breakers: dict[str, CircuitBreaker] = {}
        prepaid: dict[str, Limiter] = {}
        for channel in self.channels:
            for name in self._provider_names(channel):
                if name in self.buckets:
                    continue
                conf = self.settings.providers[name]
                if name not in self.providers:
                    self.providers[name] = await open_account(self.settings, name)
                    self._owned.append(self.providers[name])
                self.buckets[name] = RedisTokenBucket(self.client, name, conf.rate, conf.bucket_size, self.keys)
                prepaid[name] = _Prepaid(self.buckets[name])
                breakers[name] = CircuitBreaker(self.settings.breaker)
        return Sender(
            self.providers,
            prepaid,
            breakers,
            {n: self.settings.providers[n].concurrency for n in self.buckets},
            self.settings.retry,
            RedisRecorder(self),
            self.stopping.is_set,
        )

    def _capacity(self, channel: str) -> int:
        if self.options.concurrency:
            return self.options.concurrency
        return sum(self.settings.providers[n].concurrency for n in self._provider_names(channel))

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until stop(); then finish what is in flight and leave."""
        self._client = connect(self.options.redis_url)
        try:
            self.sender = await self._open()
            self.claims = IdempotencyClaims(self.client, self.keys)
            for channel in self.channels:
                await ensure_group(self.client, self.keys.deliveries(channel), WORKERS_GROUP)
                self._busy[channel] = 0
                self._freed[channel] = asyncio.Event()
            await self._heartbeat()
            loops = [asyncio.create_task(self._keep_alive(), name="keep-alive")]
            for channel in self.channels:
                loops.append(asyncio.create_task(self._read(channel), name=f"read-{channel}"))
                loops.append(asyncio.create_task(self._reclaim(channel), name=f"reclaim-{channel}"))
            stopped = asyncio.ensure_future(self.stopping.wait())
            try:
                # A loop that dies (Redis gone) stops the worker: silently idle, it would keep
                # its heartbeat-less entries from nobody, or worse, stop refreshing them mid-send.
                await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.stopping.set()
                stopped.cancel()
                for task in loops:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                outcomes = await asyncio.gather(*loops, return_exceptions=True)
            failures = [o for o in outcomes if isinstance(o, Exception)]
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
        while not await self._stopped_within(every):
            await self._heartbeat()
            by_stream: dict[str, list[str]] = {}
            for entry in list(self._entries.values()):
                by_stream.setdefault(entry.stream, []).append(entry.entry_id)
            for stream, ids in by_stream.items():
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

    async def _read(self, channel: str) -> None:
        stream = self.keys.deliveries(channel)
        while not self.stopping.is_set():
            free = self._free(channel)
            if free <= 0:
                self._freed[channel].clear()
                await self._wait_any(self._freed[channel].wait(), self.stopping.wait())
                continue
            answer = await self.client.xreadgroup(
                WORKERS_GROUP, self.name, {stream: ">"}, count=free, block=self.options.block_ms
            )
            for entry_id, fields in stream_entries(answer):
                if fields:
                    self._spawn(channel, entry_id, fields, claimed=False)
                else:  # deleted after it was delivered to us
                    await self.client.xack(stream, WORKERS_GROUP, entry_id)

    async def _reclaim(self, channel: str) -> None:
        """Take over entries whose worker went quiet for longer than the visibility timeout."""
        stream = self.keys.deliveries(channel)
        idle_ms = int(self.options.visibility_timeout_s * 1000)
        while not await self._stopped_within(self.options.visibility_timeout_s / 4):
            free = self._free(channel)
            if free <= 0:
                continue
            answer = await self.client.xautoclaim(stream, WORKERS_GROUP, self.name, idle_ms, "0-0", count=free)
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

    def _resend_in_doubt(self, provider: str) -> bool:
        if self.settings.in_doubt == "resend":
            return True
        return provider in self.providers and self.providers[provider].capabilities.idempotent

    async def finish(self, envelope: Envelope, event: OutcomeEvent, suppress: bool = False) -> None:
        """Report a final outcome and acknowledge the entry, atomically."""
        entry = self.entry(envelope)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(entry.outcomes, self.stamp(event).encode())
            pipe.hdel(self.keys.attempts(envelope.run_id), str(envelope.delivery_id))
            if suppress and envelope.address:
                # The provider says opted out / bounced: every worker stops at once, not at the next plan.
                reason = "stop" if envelope.channel == "sms" else "bounce"
                pipe.hset(self.keys.suppressed(envelope.channel), envelope.address, reason)
            pipe.xack(entry.stream, WORKERS_GROUP, entry.entry_id)
            pipe.xdel(entry.stream, entry.entry_id)
            await pipe.execute()

    async def _handle(self, channel: str, entry_id: str, fields: dict[str, str], claimed: bool) -> None:
        stream = self.keys.deliveries(channel)
        try:
            message = DeliveryMessage.decode(fields)
        except Exception:  # nothing to report to: drop it, loudly
            log.error("undecodable delivery %s on %s dropped", entry_id, stream, exc_info=True)
            await self.client.xack(stream, WORKERS_GROUP, entry_id)
            return
        envelope = message.envelope
        key = (envelope.run_id, envelope.delivery_id)
        self._entries[key] = Entry(stream, entry_id, message.outcomes)
        try:
            await self._deliver(message, claimed)
        finally:
            self._entries.pop(key, None)

    async def _deliver(self, message: DeliveryMessage, claimed: bool) -> None:
        envelope, provider = message.envelope, message.provider
        delivery_id = envelope.delivery_id
        attempt = message.attempts_done
        if provider not in self.providers:
            error = PermanentError(f"provider '{provider}' is not configured on worker {self.name}", code="config")
            await self.sender.recorder.dead(envelope, attempt, provider, error, 0.0, gave_up=False)
            return
        if claimed:
            raw = await self.client.hget(self.keys.attempts(envelope.run_id), str(delivery_id))
            if raw:
                last = orjson.loads(raw)
                attempt = max(attempt, int(last["attempt"]))
                if last["state"] == "inflight":
                    held = not self._resend_in_doubt(provider)
                    event = OutcomeEvent(
                        "in_doubt_held" if held else "in_doubt",
                        delivery_id,
                        attempt=attempt,
                        provider=last["provider"],
                        reason="crash_during_send",
                    )
                    if held:
                        await self.finish(envelope, event)
                        return
                    await self.client.xadd(message.outcomes, self.stamp(event).encode())
        claimant = owner(message.origin, envelope.run_id, delivery_id)
        window_s = self.settings.idempotency_window_hours * 3600
        holder = await self.claims.claim(envelope.idempotency_key, claimant, window_s)
        if holder is not None:
            await self.finish(envelope, OutcomeEvent("skipped", delivery_id, reason="duplicate"))
            return
        while True:
            await self.buckets[provider].acquire()
            if self.stopping.is_set():
                return  # still pending in the stream: claimed by another worker, or by our successor
            reason = await suppression_reason(self.client, envelope.channel, envelope.address, self.keys)
            if reason is not None:
                await self.finish(envelope, OutcomeEvent("skipped", delivery_id, reason=f"suppressed:{reason}"))
                return
            attempt += 1
            outcome = await self.sender.transmit(envelope, provider, attempt)
            if outcome.state != "retry" or await self._stopped_within(outcome.delay_s):
                return


def main(argv: list[str] | None = None) -> None:
    """`python -m notifyctl.backends.redis.worker --redis URL ...` (what `notifyctl worker` runs)."""
    import argparse
    import signal
    from pathlib import Path

    from notifyctl.settings import load_settings

    parser = argparse.ArgumentParser(prog="notifyctl-worker")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--channel", action="append", default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--visibility-timeout", type=float, default=30.0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
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
