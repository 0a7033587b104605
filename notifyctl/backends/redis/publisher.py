"""The coordinator's dispatcher and collector: prepared deliveries out to the workers, outcomes back.

`Publisher.transmit_batch` is the engine's Dispatcher on Redis. A delivery's intent is committed in
SQLite first, by the same claims as in one process (the policy checked again against the
directory's change counter): from then on the row is `inflight`, so a delivery a worker may send is
never `pending` again. Then it is published (one Lua call per batch: published hash and stream entry
together, idempotent, so a publication whose answer was lost can be repeated), and the dispatcher
waits for its outcome. The collector reads each lane's outcome stream, records every outcome through
the one recorder (only while its attempt is still the one in flight), then resolves the waiting
dispatcher and acknowledges the entry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis

from notifyctl.backends.redis.batching import Coalescer
from notifyctl.backends.redis.connection import Outage, retrying
from notifyctl.backends.redis.streams import (
    COORDINATOR_CONSUMER,
    COORDINATOR_GROUP,
    DeliveryMessage,
    Keys,
    ensure_group,
    stream_entries,
)
from notifyctl.models import Envelope
from notifyctl.pipeline import outcomes
from notifyctl.pipeline.backend import STOPPED, TAKEN, TAKEN_RESULT, Claims, Dispatch, OutcomeSink, Result
from notifyctl.pipeline.outcomes import Kind, Outcome, Recording
from notifyctl.pipeline.router import CircuitBreaker
from notifyctl.pipeline.sender import result_of
from notifyctl.settings import Settings
from notifyctl.store.ledger import Ledger

log = logging.getLogger("notifyctl.redis.coordinator")

# KEYS: published hash, the generation key, then one stream per item. ARGV: the generation the
# coordinator published under, then per item: delivery id, channel, the message's fields as count, key,
# value, ... Publishes each item once (a repeat finds it published), and nothing at all into a dataset
# other than the one the coordinator knows (0: Redis lost its data since).
_PUBLISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local at = 2
for i = 3, #KEYS do
  local id, channel, n = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local fields = {}
  for j = 1, n * 2 do fields[j] = ARGV[at + 2 + j] end
  if redis.call('HSETNX', KEYS[1], id, channel) == 1 then
    redis.call('XADD', KEYS[i], '*', unpack(fields))
  end
  at = at + 3 + n * 2
end
return 1
"""


class GenerationChanged(Exception):
    """Redis lost its data since the coordinator last looked: nothing was published."""


PUBLISH_LINGER_S = 0.001  # how long a publication waits for others to share its script call


@dataclass(frozen=True)
class Publication:
    message: DeliveryMessage
    stream: str


class Publisher:
    """pipeline.backend.Dispatcher on Redis (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        run_id: str,
        identity: str,
        claims: Claims,
        sink: OutcomeSink,
        stopping: asyncio.Event,
        outage: Outage,
    ) -> None:
        self.client = client
        self.keys = keys
        self.run_id = run_id
        self.identity = identity
        self.claims = claims
        self.sink = sink
        self.stopping = stopping
        self.outage = outage
        self.waiting: dict[int, asyncio.Future[Outcome]] = {}
        self.generation = ""  # the Redis dataset publications go into (set by the backend)
        self.renewed = asyncio.Event()  # set when the backend has taken note of a new dataset
        self.published_in: dict[int, str] = {}  # delivery id → the dataset it was published into
        self._publish = client.register_script(_PUBLISH)
        self._batch: Coalescer[Publication, str] = Coalescer(self._flush, linger_s=PUBLISH_LINGER_S)

    async def transmit_batch(
        self, envelopes: list[Envelope], provider_name: str, attempts: list[int], *, reroutable: bool = False
    ) -> list[Result]:
        if self.stopping.is_set():
            return [STOPPED for _ in envelopes]
        dispatches = [Dispatch(e, a, provider_name) for e, a in zip(envelopes, attempts, strict=True)]
        verdicts = await self.claims.claim(dispatches)
        results: list[Result] = [STOPPED] * len(dispatches)
        waits: dict[int, asyncio.Future[Outcome]] = {}
        for i, (dispatch, verdict) in enumerate(zip(dispatches, verdicts, strict=True)):
            if verdict == TAKEN:
                results[i] = TAKEN_RESULT
            elif isinstance(verdict, Outcome):
                self.sink.record(verdict)
                results[i] = result_of(verdict)
            else:
                waits[i] = self.expect(dispatch.envelope.delivery_id)
                await self.publish(dispatch)
        if waits:
            await self._outcomes_or_stop(set(waits.values()))
        for i, waiting in waits.items():
            if waiting.done() and not waiting.cancelled():
                results[i] = result_of(waiting.result())
            else:  # stopping: it stays at the workers; its outcome is read by the run's next coordinator
                self.waiting.pop(dispatches[i].envelope.delivery_id, None)
                self.published_in.pop(dispatches[i].envelope.delivery_id, None)
        return results

    async def _outcomes_or_stop(self, waits: set[asyncio.Future[Outcome]]) -> None:
        """Until every outcome is in, or the engine stops (the rest stay at the workers)."""
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        try:
            pending: set[asyncio.Future[Any]] = set(waits)
            while pending and not stop.done():
                _, pending = await asyncio.wait(pending | {stop}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stop)
        finally:
            stop.cancel()

    def expect(self, delivery_id: int) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.waiting[delivery_id] = future
        return future

    async def publish(self, dispatch: Dispatch) -> None:
        envelope = dispatch.envelope
        outcomes_stream = self.keys.outcomes(self.run_id, envelope.channel)
        message = DeliveryMessage(envelope, dispatch.provider, dispatch.attempt, outcomes_stream, self.identity)
        publication = Publication(message, self.keys.deliveries(envelope.channel))
        while True:
            tried = self.generation
            try:
                into = await retrying(functools.partial(self._batch.submit, publication), self.outage)
            except GenerationChanged:
                # Redis lost its data: publish again once the backend has settled what went with it.
                self.outage.recovered.set()
                while self.generation == tried:
                    self.renewed.clear()
                    await self.renewed.wait()
                continue
            self.published_in[envelope.delivery_id] = into
            return

    async def _flush(self, publications: list[Publication]) -> list[str]:
        generation = self.generation
        keys: list[str] = [self.keys.published(self.run_id), self.keys.generation]
        args: list[Any] = [generation]
        for publication in publications:
            fields = publication.message.encode()
            keys.append(publication.stream)
            args += [publication.message.envelope.delivery_id, publication.message.envelope.channel, len(fields)]
            for name, value in fields.items():
                args += [name, value]
        if not int(await self._publish(keys=keys, args=args)):
            raise GenerationChanged(f"redis lost its data since generation {generation}")
        return [generation for _ in publications]


class Collector:
    """Reads a lane's outcome stream and records each outcome (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        run_id: str,
        channel: str,
        ledger: Ledger,
        settings: Settings,
        breakers: dict[str, CircuitBreaker],
        settle: Callable[[Outcome, bool], None],
        outage: Outage,
        block_ms: int = 200,
    ) -> None:
        """`settle(outcome, recorded)`: hands the outcome to whoever waits for it."""
        self.client = client
        self.keys = keys
        self.run_id = run_id
        self.stream = keys.outcomes(run_id, channel)
        self.ledger = ledger
        self.settings = settings
        self.breakers = breakers
        self.settle = settle
        self.outage = outage
        self.block_ms = block_ms
        self.recording = Recording(settings.webhook_disable_after_hours * 3600)

    async def run(self, closing: asyncio.Event) -> None:
        """Until `closing` is set (between two reads: outcomes of deliveries in flight are still
        recorded while the engine stops)."""
        backlog = True  # first what a predecessor read but did not acknowledge
        while not closing.is_set():
            entries = await retrying(functools.partial(self._read, backlog), self.outage, closing)
            if not entries:
                backlog = False
                continue
            await self.apply(entries)

    async def _read(self, backlog: bool) -> list[tuple[str, dict[str, str]]]:
        try:
            answer = await self.client.xreadgroup(
                COORDINATOR_GROUP,
                COORDINATOR_CONSUMER,
                {self.stream: "0" if backlog else ">"},
                count=500,
                block=None if backlog else self.block_ms,
            )
        except aioredis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await ensure_group(self.client, self.stream, COORDINATOR_GROUP)  # gone with Redis's data
            return []
        return stream_entries(answer)

    async def apply(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        reported = [Outcome.from_fields(fields) for _, fields in entries if fields]
        # Whether an unknown outcome is re-sent is this database's setting, not the worker's.
        reported = [
            replace(o, resend=outcomes.resend_in_doubt(self.settings, o.provider)) if o.kind is Kind.unknown else o
            for o in reported
        ]
        recorded = await asyncio.gather(*(self.ledger.submit(functools.partial(self._write, o)) for o in reported))
        for outcome, current in zip(reported, recorded, strict=True):
            self._feed_breaker(outcome)
            self.settle(outcome, current)
        ids = [entry_id for entry_id, _ in entries]
        published = [str(o.delivery_id) for o in reported]

        async def acknowledge() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                if published:
                    pipe.hdel(self.keys.published(self.run_id), *published)
                pipe.xack(self.stream, COORDINATOR_GROUP, *ids)
                pipe.xdel(self.stream, *ids)
                await pipe.execute(raise_on_error=False)

        await retrying(acknowledge, self.outage)

    def _write(self, outcome: Outcome, conn: sqlite3.Connection) -> bool:
        return outcomes.write_if_current(conn, outcome, self.recording)

    def _feed_breaker(self, outcome: Outcome) -> None:
        """The router here picks providers; it learns their health from the workers' outcomes."""
        breaker = self.breakers.get(outcome.provider)
        if breaker is None or outcome.kind is Kind.withdrawn:
            return
        if outcome.kind in (Kind.sent, Kind.rejected):
            breaker.success()
        else:
            breaker.failure()
