"""The coordinator: the embedded Engine, with Redis Streams where its in-process senders were.

Planning, the outbox, policy and rendering stay here (so `runs show`, `audit`, `dlq` and `resume`
work unchanged). Each lane's consumers publish prepared envelopes to the channel's stream instead
of sending them, at most `window` per lane in the cluster at once; one collector per lane reads
the run's outcome stream through a consumer group and writes each event into the ledger exactly
as the embedded LedgerRecorder would, acknowledging it only after the commit. Outcomes written
while the coordinator was down are therefore read by its successor (`notifyctl resume RUN --redis`).

Published deliveries are remembered in Redis (`published` hash, written in the same MULTI as the
XADD, cleared after the final outcome is committed), so that a resumed coordinator neither
re-publishes what is still in the cluster nor ends the run before its outcomes arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from notifyctl.app.context import Context
from notifyctl.backends.redis.claims import RedisIdempotencyStore, database_identity
from notifyctl.backends.redis.streams import (
    COORDINATOR_CONSUMER,
    COORDINATOR_GROUP,
    WORKERS_GROUP,
    DeliveryMessage,
    Entries,
    Keys,
    OutcomeEvent,
    connect,
    ensure_group,
    stream_entries,
)
from notifyctl.errors import PermanentError
from notifyctl.models import Envelope
from notifyctl.pipeline.engine import Clock, Engine, Lane, PlanSource, Progress, RunOutcome, utc_clock
from notifyctl.pipeline.limiter import TokenBucket
from notifyctl.pipeline.outcomes import apply_side_effects
from notifyctl.pipeline.planner import Planner
from notifyctl.pipeline.router import CircuitBreaker
from notifyctl.providers.base import Provider
from notifyctl.settings import Settings
from notifyctl.store import runs
from notifyctl.templates.store import TemplateStore

log = logging.getLogger("notifyctl.backends.redis.coordinator")
PUBLISHERS_PER_LANE = 4
Op = Callable[[sqlite3.Connection], None]


@dataclass
class ClusterOptions:
    redis_url: str
    window: int | None = None  # deliveries per lane in the cluster at once; default: the lane's queue_size
    block_ms: int = 200
    keys: Keys = field(default_factory=Keys)


class Window:
    """How many of a lane's deliveries may be in the cluster (published, no final outcome yet)."""

    def __init__(self, limit: int, in_flight: int = 0) -> None:
        self.limit = max(1, limit)
        self.in_flight = in_flight
        self._changed = asyncio.Event()

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Take a slot; False when `stop` is set first."""
        while self.in_flight >= self.limit:
            if stop.is_set():
                return False
            self._changed.clear()
            waits = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1
        self._changed.set()


def _attempt_exists(conn: sqlite3.Connection, delivery_id: int, attempt: int) -> bool:
    row = conn.execute("SELECT 1 FROM attempts WHERE delivery_id=? AND number=?", (delivery_id, attempt)).fetchone()
    return row is not None


def outcome_op(event: OutcomeEvent) -> Op:
    """The ledger write for one worker event, as notifyctl.pipeline.outcomes.LedgerRecorder does it.
    Safe to replay (a coordinator that died between commit and XACK reads the event again)."""
    delivery_id, attempt = event.delivery_id, event.attempt

    def intent(conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT state FROM deliveries WHERE id=?", (delivery_id,)).fetchone()
        if (
            row is not None
            and row["state"] in ("pending", "inflight")
            and not _attempt_exists(conn, delivery_id, attempt)
        ):
            runs.mark_inflight(conn, delivery_id, attempt, event.provider)

    def sent(conn: sqlite3.Connection) -> None:
        runs.mark_sent(conn, delivery_id, attempt, event.provider, event.provider_message_id, event.latency_ms)

    def retry(conn: sqlite3.Connection) -> None:
        runs.mark_retry(
            conn,
            delivery_id,
            attempt,
            event.outcome or "transient",
            event.latency_ms,
            event.code,
            event.error_class or "TransientError",
            event.message or "",
            event.due or 0.0,
        )

    def dead(conn: sqlite3.Connection) -> None:
        runs.mark_dead(
            conn,
            delivery_id,
            attempt=attempt or None,
            outcome=event.outcome or "permanent",
            latency_ms=event.latency_ms,
            code=event.code,
            error_class=event.error_class or "PermanentError",
            message=event.message or "",
            envelope=event.envelope,
        )
        if event.effects and event.envelope is not None:
            error = PermanentError(
                event.message or "",
                code=event.code,
                suppress="suppress" in event.effects,
                remove_device="remove_device" in event.effects,
                disable_endpoint="disable_endpoint" in event.effects,
            )
            apply_side_effects(conn, Envelope.model_validate(event.envelope), error)

    def skipped(conn: sqlite3.Connection) -> None:
        runs.mark_decided(conn, delivery_id, "skipped", event.reason)

    def in_doubt(conn: sqlite3.Connection) -> None:
        # As runs.recover_inflight does for one row: the attempt's outcome is unknown.
        conn.execute("UPDATE attempts SET outcome='in_doubt' WHERE delivery_id=? AND number=?", (delivery_id, attempt))
        if event.kind == "in_doubt_held":
            conn.execute(
                "UPDATE deliveries SET state='in_doubt', in_doubt=1, reason=? WHERE id=? AND state='inflight'",
                (event.reason or "crash_during_send", delivery_id),
            )
        else:
            conn.execute("UPDATE deliveries SET in_doubt=1 WHERE id=?", (delivery_id,))

    ops: dict[str, Op] = {
        "intent": intent,
        "sent": sent,
        "retry": retry,
        "dead": dead,
        "skipped": skipped,
        "in_doubt": in_doubt,
        "in_doubt_held": in_doubt,
    }
    return ops[event.kind]


def _progress_state(kind: str) -> str:
    return "in_doubt" if kind == "in_doubt_held" else kind


class Coordinator(Engine):
    def __init__(
        self,
        settings: Settings,
        conn: sqlite3.Connection,
        templates: TemplateStore,
        options: ClusterOptions,
        *,
        clock: Clock = utc_clock,
        progress: Progress | None = None,
        providers: dict[str, Provider] | None = None,
    ) -> None:
        super().__init__(settings, conn, templates, clock=clock, progress=progress, providers=providers)
        # Intents are committed by workers through Redis: policy is verified here, when publishing.
        self.verify_at_intent = False
        self.options = options
        self.keys = options.keys
        self.identity = database_identity(settings.database_path)
        self._sync_client: redis.Redis = redis.Redis.from_url(options.redis_url, decode_responses=True)
        self.idempotency = RedisIdempotencyStore(
            settings.idempotency_window_hours * 3600, self._sync_client, self.identity, self.keys
        )
        self.planner = Planner(conn, self.policy, self.idempotency, clock)
        self._client: aioredis.Redis | None = None
        self._run_id = ""
        self._carried: dict[int, str] = {}  # delivery id → channel, in the cluster from an earlier session
        self._tracked: set[int] = set()  # in the cluster, final outcome not yet recorded
        self._windows: dict[str, Window] = {}

    @property
    def client(self) -> aioredis.Redis:
        assert self._client is not None, "coordinator not running"
        return self._client

    async def _open_providers(self, channels: list[str]) -> None:
        """Workers hold the providers; here only the routing state (breakers fed by outcomes)."""
        for channel in channels:
            route = self.settings.channels.get(channel)
            if route is None:
                continue
            for name in route.names:
                conf = self.settings.providers[name]
                self.limiters.setdefault(name, TokenBucket(conf.rate, conf.bucket_size))
                self.breakers.setdefault(name, CircuitBreaker(self.settings.breaker))

    async def run(
        self,
        run_id: str,
        source: PlanSource | None = None,
        *,
        allow_template_change: bool = False,
        service: bool = False,
    ) -> RunOutcome:
        self._run_id = run_id
        self._client = connect(self.options.redis_url)
        try:
            run = runs.get_run(self.conn, run_id)
            assert run is not None, run_id
            for channel in run.channels:
                await ensure_group(self.client, self.keys.deliveries(channel), WORKERS_GROUP)
                await ensure_group(self.client, self.keys.outcomes(run_id, channel), COORDINATOR_GROUP)
            published = await self.client.hgetall(self.keys.published(run_id))
            self._carried = {int(k): str(v) for k, v in published.items()}
            self._tracked = set(self._carried)
            self._reconcile(list(self._carried))
            mirror = asyncio.create_task(self._mirror_suppressions(), name="mirror-suppressions")
            try:
                outcome = await super().run(
                    run_id, source, allow_template_change=allow_template_change, service=service
                )
            finally:
                mirror.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await mirror
            if outcome.state != "interrupted":
                await self._clean_up(run_id, run.channels)
            return outcome
        finally:
            await self.client.aclose()
            self._sync_client.close()

    async def _mirror_suppressions(self, every_s: float = 0.25) -> None:
        """Copy this database's suppressions to Redis as they appear, so that one added by any path
        (`suppress add`, an inbound STOP or unsubscribe at `serve`, a provider's bounce) stops the
        workers' next sends, not only the coordinator's next publish."""
        watermark = ""
        while True:
            rows = self.conn.execute(
                "SELECT channel, address, reason, created FROM suppressions WHERE created > ? ORDER BY created",
                (watermark,),
            ).fetchall()
            if rows:
                async with self.client.pipeline(transaction=False) as pipe:
                    for row in rows:
                        pipe.hset(self.keys.suppressed(row["channel"]), row["address"], row["reason"])
                    await pipe.execute()
                watermark = rows[-1]["created"]
            await asyncio.sleep(every_s)

    def _reconcile(self, delivery_ids: list[int]) -> None:
        """`resume` turned rows left inflight into in_doubt before this engine started; those still
        in the cluster are not in doubt (a worker has them, or will claim them and decide), so they go
        back to inflight and their outcome will come from the outcome stream."""
        with self.conn:
            for delivery_id in delivery_ids:
                row = self.conn.execute(
                    """SELECT d.state, d.reason, a.outcome FROM deliveries d
                       LEFT JOIN attempts a ON a.delivery_id = d.id AND a.number = d.attempts WHERE d.id=?""",
                    (delivery_id,),
                ).fetchone()
                if row is None or row["outcome"] != "in_doubt":
                    continue
                if row["state"] == "pending" or (row["state"] == "in_doubt" and row["reason"] == "crash_during_send"):
                    self.conn.execute("UPDATE deliveries SET state='inflight', reason=NULL WHERE id=?", (delivery_id,))
                    self.conn.execute(
                        """UPDATE attempts SET outcome='inflight' WHERE delivery_id=?
                           AND number=(SELECT attempts FROM deliveries WHERE id=?)""",
                        (delivery_id, delivery_id),
                    )

    async def _clean_up(self, run_id: str, channels: list[str]) -> None:
        if await self.client.hlen(self.keys.published(run_id)):
            return
        await self.client.delete(
            self.keys.published(run_id),
            self.keys.attempts(run_id),
            *[self.keys.outcomes(run_id, channel) for channel in channels],
        )

    # --- the lane consumers -----------------------------------------------------------------------

    def _lane_work(self, lane: Lane) -> list[Coroutine[Any, Any, None]]:
        carried = sum(1 for channel in self._carried.values() if channel == lane.channel)
        # Counted now, before the feeder can finish: the run waits for their outcomes too.
        lane.outstanding += carried
        limit = self.options.window or self.settings.channels[lane.channel].queue_size
        self._windows[lane.channel] = Window(limit, carried)
        lane.workers = PUBLISHERS_PER_LANE  # the queue's consumers; the collector does not read it
        return [*(self._publish(lane) for _ in range(lane.workers)), self._collect(lane)]

    async def _publish(self, lane: Lane) -> None:
        stream = self.keys.deliveries(lane.channel)
        outcomes = self.keys.outcomes(self._run_id, lane.channel)
        window = self._windows[lane.channel]
        while (item := await lane.queue.get()) is not None:
            delivery_id: int = item["row"]["id"]
            if delivery_id in self._carried:
                await self._finished(lane)  # its outcome comes from the cluster, counted as carried
                continue
            if not await window.acquire(self.stopping):
                return  # stopping: the row is still pending in the outbox
            envelope = await self._prepare(lane, item)
            if envelope is None:
                window.release()
                await self._finished(lane)
                continue
            message = DeliveryMessage(envelope, lane.router.pick(), item["attempts"], outcomes, self.identity)
            self._tracked.add(delivery_id)
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.published(self._run_id), str(delivery_id), lane.channel)
                pipe.xadd(stream, message.encode())
                await pipe.execute()

    async def _collect(self, lane: Lane) -> None:
        stream = self.keys.outcomes(self._run_id, lane.channel)
        backlog = True  # first what a predecessor read but did not acknowledge
        while not (lane.finished or self.stopping.is_set()):
            answer = await self.client.xreadgroup(
                COORDINATOR_GROUP,
                COORDINATOR_CONSUMER,
                {stream: "0" if backlog else ">"},
                count=500,
                block=None if backlog else self.options.block_ms,
            )
            entries = stream_entries(answer)
            if not entries:
                backlog = False
                continue
            await self._apply(lane, stream, entries)

    async def _apply(self, lane: Lane, stream: str, entries: Entries) -> None:
        assert self.ledger is not None
        events = [(entry_id, OutcomeEvent.decode(fields)) for entry_id, fields in entries if fields]
        results = await asyncio.gather(
            *(self.ledger.submit(outcome_op(event)) for _, event in events), return_exceptions=True
        )
        for (_, event), result in zip(events, results, strict=True):
            if isinstance(result, BaseException):
                # Not acknowledged: the events are read again by the next coordinator for this run.
                raise RuntimeError(f"could not record {event.kind} of delivery {event.delivery_id}") from result
        finished = 0
        settled: list[str] = []
        for _, event in events:
            self._feed_breaker(event)
            if not event.final or event.delivery_id not in self._tracked:
                continue
            self._tracked.discard(event.delivery_id)
            self._windows[lane.channel].release()
            settled.append(str(event.delivery_id))
            self.progress.outcome(lane.channel, _progress_state(event.kind))
            finished += 1
        ids = [entry_id for entry_id, _ in entries]
        async with self.client.pipeline(transaction=True) as pipe:
            if settled:
                pipe.hdel(self.keys.published(self._run_id), *settled)
            pipe.xack(stream, COORDINATOR_GROUP, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
        for _ in range(finished):
            await self._finished(lane)

    def _feed_breaker(self, event: OutcomeEvent) -> None:
        """The router here picks providers; it learns their health from the workers' outcomes."""
        breaker = self.breakers.get(event.provider)
        if breaker is None:
            return
        if event.kind == "sent" or (event.kind == "dead" and event.outcome == "permanent"):
            breaker.success()
        elif event.kind == "retry" or event.kind == "dead":
            breaker.failure()


@dataclass
class ClusterContext(Context):
    """operations.Context whose engines are Coordinators: broadcast, send and resume run on the cluster."""

    cluster: ClusterOptions | None = None

    @classmethod
    def open_cluster(cls, settings: Settings, cluster: ClusterOptions, clock: Clock = utc_clock) -> ClusterContext:
        base = Context.open(settings, clock)
        return cls(base.settings, base.conn, base.templates, base.clock, cluster)

    def engine(self, progress: Progress | None = None) -> Engine:
        assert self.cluster is not None
        return Coordinator(self.settings, self.conn, self.templates, self.cluster, clock=self.clock, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """`python -m notifyctl.backends.redis.coordinator --redis URL broadcast CAMPAIGN | resume RUN`: what
    `notifyctl broadcast/resume --redis URL` run, without output (read the result with `runs show`).
    Exit codes as the CLI's: 0 done, 1 some failed, 130 interrupted."""
    import argparse
    import signal
    from pathlib import Path

    from notifyctl import aio
    from notifyctl.app.broadcast import broadcast
    from notifyctl.app.resume import ResumeSkipped, resume
    from notifyctl.intake.campaigns import load_campaign
    from notifyctl.settings import load_settings

    parser = argparse.ArgumentParser(prog="notifyctl-coordinator")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("command", choices=["broadcast", "resume"])
    parser.add_argument("target")
    args = parser.parse_args(argv)
    ctx = ClusterContext.open_cluster(load_settings(args.config), ClusterOptions(args.redis, window=args.window))
    engines: list[Engine] = []

    def stop_all() -> None:
        for engine in engines:
            engine.stop()

    async def go() -> RunOutcome | object:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_all)
        if args.command == "broadcast":
            return await broadcast(ctx, load_campaign(Path(args.target)), on_engine=engines.append)
        return await resume(ctx, args.target, on_engine=engines.append)

    try:
        result = aio.run(go())
    finally:
        ctx.conn.close()
    if isinstance(result, ResumeSkipped) or not isinstance(result, RunOutcome):
        return 0
    failed = sum(states.get("dead", 0) + states.get("in_doubt", 0) for states in result.counts.values())
    return 1 if failed else 130 if result.state == "interrupted" else 0


if __name__ == "__main__":
    raise SystemExit(main())
