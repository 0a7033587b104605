"""The Redis backend: the engine's prepared deliveries go to `notifyctl worker` processes.

Planning, the outbox, policy, rendering and the audit stay with the coordinator's SQLite database,
so `runs show`, `audit`, `dlq` and `resume` work unchanged. The engine is the same one that sends in
one process; only its dispatcher differs (publisher.py): intent committed in SQLite, then published
to the channel's stream, then the outcome collected from the run's outcome stream.

Crash and restart rules (whatever the order things stop in):
- A published delivery is `inflight` in SQLite until its outcome is recorded: never `pending` again.
- The run records the Redis dataset it published into (`generation`, a random id the first
  coordinator puts into Redis). A coordinator that opens the run again (`resume --redis`) finds
  the deliveries still at the workers in the run's `published` hash, waits for their outcomes (read
  from the outcome stream, including those reported while no coordinator ran), and puts back to
  `pending` the few whose intent committed without being published. If the generation differs or is
  gone (Redis lost its data), every delivery in flight is of unknown outcome, exactly as after a
  crash: re-sent where the receiver dedupes, held otherwise.
- The same check runs whenever the connection comes back after an outage.
- Whenever the directory's change counter moves, the published deliveries are decided again and
  revoked where they may no longer go out (revocations.py): a backstop behind the opt-out writers,
  which revoke before they commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
import redis

from notifyctl.backends.local import LedgerClaims, LedgerSink
from notifyctl.backends.redis.claims import RedisIdempotencyStore, database_identity
from notifyctl.backends.redis.connection import Outage, retrying
from notifyctl.backends.redis.publisher import Collector, Publisher
from notifyctl.backends.redis.revocations import REVOCATION_TTL_S, encode, revoked
from notifyctl.backends.redis.streams import COORDINATOR_GROUP, WORKERS_GROUP, Keys, connect, ensure_group
from notifyctl.models import Decision, DeliveryState
from notifyctl.pipeline import outcomes, runlog
from notifyctl.pipeline.backend import Dispatcher
from notifyctl.pipeline.outcomes import Outcome, Recording
from notifyctl.policy.decide import Policy
from notifyctl.settings import Settings
from notifyctl.store import cluster, outbox
from notifyctl.store.db import transaction
from notifyctl.store.directory import directory_version

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from notifyctl.pipeline.engine import Engine

log = logging.getLogger("notifyctl.redis.coordinator")
CLOSE_TIMEOUT_S = 2.0


@dataclass
class ClusterOptions:
    redis_url: str
    window: int | None = None  # deliveries per lane at the workers at once; default: the lane's queue_size
    block_ms: int = 200
    keys: Keys = field(default_factory=Keys)
    heartbeat_ttl_s: float = 10.0
    backstop_every_s: float = 0.1


def redis_idempotency(settings: Settings, options: ClusterOptions) -> RedisIdempotencyStore:
    """The planner's key store on a cluster: this database's table, plus the keys other databases
    claimed in Redis."""
    client = redis.Redis.from_url(options.redis_url, decode_responses=True, socket_connect_timeout=2.0)
    identity = database_identity(settings.database_path)
    return RedisIdempotencyStore(settings.idempotency_window_hours * 3600, client, identity, options.keys)


def _write_if_current(conn: sqlite3.Connection, *, outcome: Outcome, recording: Recording) -> bool:
    return outcomes.write_if_current(conn, outcome, recording)


class RedisBackend:
    shard = (0, 1)
    follows = False

    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self.keys = options.keys
        self.outage = Outage(log, f"coordinator on {options.redis_url.rsplit('@', 1)[-1]}")
        self.generation = ""
        self._client: aioredis.Redis | None = None
        self._engine: Engine | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._carried: dict[int, str] = {}  # delivery id → channel: published by an earlier session
        # Set by close(): the loops end between two Redis calls (redis-py may swallow a cancellation
        # that lands during a read, so they are not stopped by cancelling them).
        self.closing = asyncio.Event()

    @property
    def client(self) -> aioredis.Redis:
        assert self._client is not None, "open() first"
        return self._client

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "open() first"
        return self._engine

    def lane_width(self, channel: str) -> int:
        return self.options.window or self.engine.settings.channels[channel].queue_size

    async def open(self, engine: Engine) -> Dispatcher:
        self._engine = engine
        settings, run_id = engine.settings, engine.run_id
        self._client = connect(self.options.redis_url)
        self.identity = database_identity(settings.database_path)
        self.generation = await retrying(self._generation, self.outage)
        await retrying(self._ensure_groups, self.outage)
        await self._recover()
        assert engine.ledger is not None
        recording = Recording(settings.webhook_disable_after_hours * 3600)
        sink = LedgerSink(engine.ledger, recording)
        self.publisher = Publisher(
            self.client,
            self.keys,
            run_id,
            self.identity,
            LedgerClaims(engine.ledger, engine.verifier),
            sink,
            engine.stopping,
            self.outage,
        )
        for channel in engine.lanes:
            collector = Collector(
                self.client,
                self.keys,
                run_id,
                channel,
                engine.ledger,
                settings,
                engine.breakers,
                self._settle,
                self.outage,
                self.options.block_ms,
            )
            self._tasks.append(asyncio.create_task(collector.run(self.closing), name=f"collect-{channel}"))
        self.publisher.generation = self.generation
        for delivery_id, channel in self._carried.items():
            engine.lanes[channel].outstanding += 1  # counted before the feeders can finish the lane
            self.publisher.expect(delivery_id)
            self.publisher.published_in[delivery_id] = self.generation
        self._tasks.append(asyncio.create_task(self._backstop(), name="revocations"))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        self._tasks.append(asyncio.create_task(self._watch_generation(), name="generation"))
        return self.publisher

    async def close(self) -> None:
        self.closing.set()
        _, late = await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S) if self._tasks else (set(), set())
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=CLOSE_TIMEOUT_S)
        if self._client is None:
            return
        engine = self.engine
        try:
            if not outbox.inflight(engine.conn, engine.run_id):
                cluster.detach(engine.conn, engine.run_id)
                with contextlib.suppress(Exception):
                    channels = list(engine.lanes)
                    await self.client.delete(
                        self.keys.published(engine.run_id),
                        self.keys.coordinator(engine.run_id),
                        *[self.keys.outcomes(engine.run_id, channel) for channel in channels],
                    )
        finally:
            await self.client.aclose()

    # --- the Redis dataset and recovery ---------------------------------------------------------

    async def _generation(self) -> str:
        await self.client.set(self.keys.generation, uuid.uuid4().hex, nx=True)
        return str(await self.client.get(self.keys.generation))

    async def _ensure_groups(self) -> None:
        for channel in self.engine.lanes:
            await ensure_group(self.client, self.keys.deliveries(channel), WORKERS_GROUP)
            await ensure_group(self.client, self.keys.outcomes(self.engine.run_id, channel), COORDINATOR_GROUP)

    async def _recover(self) -> None:
        """Deliveries in flight from an earlier session: awaited, put back, or in doubt (module docstring)."""
        engine = self.engine
        conn, run_id = engine.conn, engine.run_id
        earlier = cluster.get(conn, run_id)
        if earlier is not None and earlier.generation == self.generation:
            published = await retrying(lambda: self.client.hgetall(self.keys.published(run_id)), self.outage)
            with transaction(conn):
                for row in outbox.inflight(conn, run_id):
                    if str(row["id"]) in published:
                        self._carried[row["id"]] = row["channel"]
                    else:
                        outbox.unpublish(conn, row["id"], row["attempts"])
        else:
            # Published into a Redis dataset that is gone, or sent in-process by a crashed session.
            runlog.crash_recovered(run_id, *outcomes.recover_inflight(conn, run_id, engine.settings))
        self._attach()

    async def _watch_generation(self) -> None:
        """After each outage: is the dataset the run published into still there?"""
        while not self.closing.is_set():
            if not await self._until(self.outage.recovered, None):
                return
            self.outage.recovered.clear()
            current = await retrying(lambda: self.client.get(self.keys.generation), self.outage)
            if current == self.generation:
                continue
            log.warning(
                "redis lost its data: deliveries at the workers are in doubt", extra={"run_id": self.engine.run_id}
            )
            old, publisher = self.generation, self.publisher
            lost = [delivery_id for delivery_id, into in publisher.published_in.items() if into == old]
            self.generation = await retrying(self._generation, self.outage)
            await retrying(self._ensure_groups, self.outage)
            self._attach()
            publisher.generation = self.generation
            publisher.renewed.set()  # publications waiting for the new dataset go ahead
            await self._lost(lost)

    def _attach(self) -> None:
        """Record where this run's deliveries are published, for the opt-out writers' revocations."""
        options, engine = self.options, self.engine
        run = cluster.ClusterRun(engine.run_id, options.redis_url, self.keys.prefix, self.identity, self.generation)
        cluster.attach(engine.conn, run)

    async def _lost(self, delivery_ids: list[int]) -> None:
        """Deliveries whose outcome went with Redis's data: unknown, recorded as after a crash."""
        engine = self.engine
        assert engine.ledger is not None
        recording = Recording(engine.settings.webhook_disable_after_hours * 3600)
        for row in outbox.deliveries_by_id(engine.conn, delivery_ids):
            if row["state"] != DeliveryState.inflight:
                continue
            resend = outcomes.resend_in_doubt(engine.settings, row["provider"] or "")
            outcome = outcomes.crashed(
                engine.run_id, row["id"], row["attempts"], row["provider"] or "", row["channel"], resend
            )
            write = functools.partial(_write_if_current, outcome=outcome, recording=recording)
            self._settle(outcome, await engine.ledger.submit(write))

    def _settle(self, outcome: Outcome, recorded: bool) -> None:
        """An outcome arrived (or was declared lost): to the dispatcher waiting for it, or, for a
        delivery published by an earlier session, to its lane."""
        future = self.publisher.waiting.pop(outcome.delivery_id, None)
        self.publisher.published_in.pop(outcome.delivery_id, None)
        if future is not None and not future.done():
            future.set_result(outcome)
        channel = self._carried.pop(outcome.delivery_id, None)
        if channel is None or not recorded:
            return
        engine = self.engine
        lane = engine.lanes[channel]
        if outcome.final:
            engine.progress.outcome(channel, outcome.progress_state)
            lane.done_with_one()
            return

        async def again() -> None:  # due again (a retry, or in doubt and re-sent): through the feeder
            rows = outbox.deliveries_by_id(engine.conn, [outcome.delivery_id])
            await engine.feeder.enqueue(lane, engine.feeder.page(engine.conn, engine.policy, channel, rows))
            lane.done_with_one()

        self._tasks.append(asyncio.create_task(again()))

    async def _until(self, event: asyncio.Event, timeout_s: float | None) -> bool:
        """Wait for `event` (at most `timeout_s`), or until closing; True when `event` is set."""
        waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.closing.wait())}
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return event.is_set()

    # --- revocations and heartbeat --------------------------------------------------------------

    async def _backstop(self) -> None:
        engine = self.engine
        policy = Policy(engine.settings, engine.conn, engine.clock)
        seen = -1
        while not self.closing.is_set():
            version = directory_version(engine.conn)
            if version != seen:
                ids = list(self.publisher.waiting)
                decisions = revoked(policy, cluster.outstanding(engine.conn, ids), datetime.now(UTC))
                if decisions:
                    await retrying(functools.partial(self._revoke, decisions), self.outage)
                seen = version
            await self._until(self.closing, self.options.backstop_every_s)

    async def _revoke(self, decisions: dict[int, Decision]) -> None:
        name = self.keys.revoked(self.identity)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping={str(i): encode(d) for i, d in decisions.items()})
            pipe.expire(name, REVOCATION_TTL_S)
            await pipe.execute()

    async def _heartbeat(self) -> None:
        """What `cluster status` shows of this run: alive, how much is at the workers, Redis reachable."""
        engine = self.engine
        ttl_ms = int(self.options.heartbeat_ttl_s * 1000)
        while not self.closing.is_set():
            beat = {
                "run_id": engine.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "channels": list(engine.lanes),
                "at_workers": len(self.publisher.waiting),
                "seen": time.time(),
            }
            with contextlib.suppress(Exception):  # an outage is reported by the loops that retry
                await self.client.set(self.keys.coordinator(engine.run_id), orjson.dumps(beat).decode(), px=ttl_ms)
            await self._until(self.closing, self.options.heartbeat_ttl_s / 4)
