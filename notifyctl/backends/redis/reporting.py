"""A worker's side of the pipeline's interfaces: its claims and its outcome sink, in Redis.

`RedisClaims` checks quiet hours (time passes while a delivery waits), then claims in one Lua call
per batch (claims.py): withdrawn where an opt-out revoked it or another database holds its
idempotency key, else the provider call is recorded as this worker's. `RedisSink` reports each
outcome to its coordinator's outcome stream and acknowledges the entry in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import redis.asyncio as aioredis

from notifyctl.backends.redis.batching import Coalescer
from notifyctl.backends.redis.claims import CallClaims, ClaimRequest
from notifyctl.backends.redis.connection import Outage, retrying
from notifyctl.backends.redis.revocations import decode
from notifyctl.backends.redis.streams import WORKERS_GROUP, DeliveryMessage, Keys
from notifyctl.models import Decision
from notifyctl.pipeline import outcomes
from notifyctl.pipeline.backend import Dispatch, Verdict
from notifyctl.pipeline.outcomes import Outcome
from notifyctl.policy.decide import quiet_hours
from notifyctl.settings import Settings

OUTCOME_LINGER_S = 0.002  # how long an outcome waits for others to share its transaction


@dataclass
class Entry:
    """A delivery in progress: where it came from, and its outcome's report once written."""

    stream: str
    entry_id: str
    message: DeliveryMessage
    reported: asyncio.Future[None]


class WorkerState(Protocol):
    """What the worker's claims and sink use of it."""

    settings: Settings
    keys: Keys
    outage: Outage
    calls: CallClaims
    sent: int
    failed: int

    @property
    def client(self) -> aioredis.Redis: ...

    def entry(self, run_id: str, delivery_id: int) -> Entry: ...


class RedisClaims:
    """pipeline.backend.Claims on a worker: quiet hours checked here, then one Lua call per batch."""

    def __init__(self, worker: WorkerState) -> None:
        self.worker = worker
        self._batch: Coalescer[ClaimRequest, str] = Coalescer(self._flush)

    async def claim(self, dispatches: Sequence[Dispatch]) -> list[Verdict]:
        settings, now = self.worker.settings, datetime.now(UTC)
        verdicts: list[Verdict] = []
        for d in dispatches:
            message = self.worker.entry(d.envelope.run_id, d.envelope.delivery_id).message
            envelope = d.envelope
            deferral = quiet_hours(
                settings,
                channel=envelope.channel,
                category=envelope.category,
                address=envelope.address,
                timezone=envelope.recipient_timezone,
                phone=envelope.recipient_phone,
                now=now,
            )
            if deferral is not None:
                verdicts.append(outcomes.withdrawn(envelope, d.attempt, d.provider, deferral))
                continue
            request = ClaimRequest(
                message.origin, envelope.run_id, envelope.delivery_id, d.attempt, envelope.idempotency_key
            )
            answer = await retrying(lambda r=request: self._batch.submit(r), self.worker.outage)  # type: ignore[misc]
            if answer == "ok":
                verdicts.append(None)
            elif answer.startswith("r:"):
                verdicts.append(outcomes.withdrawn(envelope, d.attempt, d.provider, decode(answer[2:])))
            else:  # another database claimed the key within the window
                verdicts.append(outcomes.withdrawn(envelope, d.attempt, d.provider, Decision.skip("duplicate")))
        return verdicts

    async def _flush(self, requests: list[ClaimRequest]) -> list[str]:
        return await self.worker.calls.claim(requests)


# KEYS: per outcome, its outcome stream, its database's calls hash and its deliveries stream. ARGV: the
# workers' group, then per outcome: the outcome record, its call ("delivery:attempt") and its entry id.
# The outcome is written, the call forgotten and the entry acknowledged and deleted, atomically: one
# script call per batch (a group lost with Redis's data fails XACK alone, hence pcall).
_REPORT = """
for i = 0, #KEYS / 3 - 1 do
  local outcomes, calls, stream = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local record, call, entry = ARGV[i * 3 + 2], ARGV[i * 3 + 3], ARGV[i * 3 + 4]
  redis.call('XADD', outcomes, '*', 'o', record)
  redis.call('HDEL', calls, call)
  redis.pcall('XACK', stream, ARGV[1], entry)
  redis.call('XDEL', stream, entry)
end
return #KEYS / 3
"""


class RedisSink:
    """pipeline.backend.OutcomeSink on a worker: each outcome goes to its coordinator's outcome stream,
    and the entry is acknowledged and deleted, in one script call per batch."""

    def __init__(self, worker: WorkerState) -> None:
        self.worker = worker
        self._script = worker.client.register_script(_REPORT)
        # Outcomes are off the critical path: a couple of milliseconds gathers many into one transaction.
        self._batch: Coalescer[Outcome, None] = Coalescer(self._flush, linger_s=OUTCOME_LINGER_S)
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, outcome: Outcome) -> None:
        task = asyncio.create_task(self._report(outcome))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, outcome: Outcome) -> None:
        entry = self.worker.entry(outcome.run_id, outcome.delivery_id)
        try:
            await retrying(lambda: self._batch.submit(outcome), self.worker.outage)
        except BaseException as exc:
            if not entry.reported.done():
                entry.reported.set_exception(exc)
            raise
        if not entry.reported.done():
            entry.reported.set_result(None)

    async def _flush(self, reported: list[Outcome]) -> list[None]:
        names = self.worker.keys
        keys: list[str] = []
        args: list[str] = [WORKERS_GROUP]
        for outcome in reported:
            entry = self.worker.entry(outcome.run_id, outcome.delivery_id)
            keys += [entry.message.outcomes, names.calls(entry.message.origin), entry.stream]
            args += [outcome.as_fields()["o"], f"{outcome.delivery_id}:{outcome.attempt}", entry.entry_id]
        await self._script(keys=keys, args=args)
        for outcome in reported:
            if outcome.kind is outcomes.Kind.sent:
                self.worker.sent += 1
            elif outcome.final:
                self.worker.failed += outcome.kind is not outcomes.Kind.withdrawn
        return [None for _ in reported]
