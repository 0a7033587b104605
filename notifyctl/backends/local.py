"""The embedded backend: prepared deliveries go to the in-process Sender, through token buckets in
this process, with intents and outcomes in the SQLite outbox through the ledger.

`LocalBackend(shard=(k, n), follows=...)` is also what each sender process runs
(backends/processes.py): the same engine on one shard of the outbox, at 1/n of every provider's rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiolimiter import AsyncLimiter

from notifyctl.pipeline import outcomes, runlog
from notifyctl.pipeline.backend import TAKEN, Dispatch, Dispatcher, Verdict
from notifyctl.pipeline.outcomes import Kind, Outcome, Recording
from notifyctl.pipeline.sender import Sender
from notifyctl.pipeline.verify import Verifier
from notifyctl.providers.accounts import open_account
from notifyctl.providers.base import Provider
from notifyctl.security.redaction import Scrubber
from notifyctl.settings import Settings
from notifyctl.store.ledger import Ledger

if TYPE_CHECKING:
    from notifyctl.pipeline.engine import Engine

# Sends are spread over a little more than a second (see TokenBucket): what leaves together does not
# arrive together, and this much spread keeps a receiver's one-second windows within R + burst. It
# stays under burst / R (times GUARD_SHARE), else the guard itself would hold a steady stream at R.
WINDOW_GUARD_S = 0.08
GUARD_SHARE = 0.8
# Above this many sends a second the per-send window record is not kept (memory); the bucket alone paces.
MAX_WINDOWED = 10_000


class TokenBucket:
    """`rate` tokens per second with room for `burst`; aiolimiter's leaky bucket underneath.

    The bucket starts empty: the burst is room saved up while sending below the rate, not a
    free extra at start-up. The promise is counted where the provider sees it: no one-second window
    holds more than rate + burst requests. The bucket alone keeps that only where the token is
    taken, before the intent's commit: requests that wait longer behind a commit than their
    neighbours leave together, and the receiver sees them in one window with the next ones. So
    `pace()`, called right before the provider call, keeps the last rate + burst call times too and
    holds a call until the oldest of them is more than a second and `guard_s` old; at a steady
    rate that delays nothing (the oldest is then (rate + burst) / rate seconds old, more than
    1 + guard_s), it only evens out what a slow commit bunched together."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._bucket = AsyncLimiter(self.burst, self.burst / rate)
        self._started = False
        self._paused_until = 0.0
        self._slow_until = 0.0
        self.guard_s = min(WINDOW_GUARD_S, GUARD_SHARE * self.burst / rate)
        per_window = int(rate + self.burst)
        self._sent: deque[float] | None = deque(maxlen=per_window) if per_window <= MAX_WINDOWED else None

    async def acquire(self, n: int = 1) -> None:
        if not self._started:
            self._started = True
            await self._bucket.acquire(self.burst)  # at once: it only fills the empty bucket's room
        for _ in range(n):
            while (wait := self._paused_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await self._bucket.acquire()
            if time.monotonic() < self._slow_until:
                # A second token per message halves the throughput while the provider recovers.
                await self._bucket.acquire()

    async def pace(self, n: int = 1) -> None:
        """Just before the provider call (after the intent's commit): wait while the last rate + burst
        calls all fall within the last second and `guard_s`, then count `n` more."""
        sent = self._sent
        if sent is None:
            return
        for _ in range(n):
            # Checked again after every wait: other senders may have taken the room meanwhile.
            while len(sent) == sent.maxlen and (wait := sent[0] + 1.0 + self.guard_s - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            sent.append(time.monotonic())

    def slow_down(self, retry_after_s: float | None, for_s: float) -> None:
        now = time.monotonic()
        if retry_after_s:
            self._paused_until = max(self._paused_until, now + retry_after_s)
        self._slow_until = max(self._slow_until, now + for_s)


class LedgerClaims:
    """Intents committed by the ledger (a batch per commit), each a claim on a row still pending as
    read; the policy checked again against the directory's change counter read in that commit."""

    def __init__(self, ledger: Ledger, verifier: Verifier) -> None:
        self.ledger = ledger
        self.verifier = verifier

    async def claim(self, dispatches: Sequence[Dispatch]) -> list[Verdict]:
        if len(dispatches) == 1:  # the usual case: no gather (a task per call) for one intent
            only = dispatches[0]
            versions = [await self.ledger.intent(only.envelope.delivery_id, only.attempt, only.provider)]
        else:
            versions = await asyncio.gather(
                *(self.ledger.intent(d.envelope.delivery_id, d.attempt, d.provider) for d in dispatches)
            )
        verdicts: list[Verdict] = []
        for dispatch, version in zip(dispatches, versions, strict=True):
            if version is None:  # no longer pending as read: another sender process claimed it
                verdicts.append(TAKEN)
                continue
            decision = self.verifier.recheck(dispatch.envelope.delivery_id, version)
            if decision is None:
                verdicts.append(None)
            else:
                verdicts.append(outcomes.withdrawn(dispatch.envelope, dispatch.attempt, dispatch.provider, decision))
        return verdicts


class LedgerSink:
    """Outcomes queued for the ledger's next batch, behind their intents; recorded by the one recorder
    (successes through the ledger's batched statements, which write the same as outcomes.write)."""

    def __init__(self, ledger: Ledger, recording: Recording) -> None:
        self.ledger = ledger
        self.recording = recording

    def record(self, outcome: Outcome) -> None:
        if outcome.kind is Kind.sent:
            endpoint_user = outcome.user_id if outcome.channel == "webhook" else None
            self.ledger.sent(
                outcome.delivery_id,
                outcome.attempt,
                outcome.provider,
                outcome.message_id,
                outcome.latency_ms,
                endpoint_user,
            )
            return
        recording = self.recording
        self.ledger.post(lambda conn: outcomes.write(conn, outcome, recording))


class LocalBackend:
    """The engine's deliveries sent by this process (`shard`: its share of a run's rows and rates)."""

    def __init__(self, shard: tuple[int, int] = (0, 1), follows: bool = False) -> None:
        self.shard = shard
        self.follows = follows
        self._owned: list[Provider] = []
        self._settings: Settings | None = None

    async def open(self, engine: Engine) -> Dispatcher:
        settings, share = engine.settings, self.shard[1]
        self._settings = settings
        if not self.follows:  # the run's first process: attempts left in flight by a crash are in doubt
            runlog.crash_recovered(engine.run_id, *outcomes.recover_inflight(engine.conn, engine.run_id, settings))
        names = [name for channel in engine.lanes for name in settings.channels[channel].names]
        buckets: dict[str, TokenBucket] = {}
        for name in dict.fromkeys(names):
            conf = settings.providers[name]
            if name not in engine.providers:
                engine.providers[name] = await open_account(settings, name)
                self._owned.append(engine.providers[name])
            buckets[name] = TokenBucket(conf.rate / share, max(1.0, conf.bucket_size / share))
        assert engine.ledger is not None
        recording = Recording(settings.webhook_disable_after_hours * 3600)
        return Sender(
            engine.providers,
            dict(buckets),
            engine.breakers,
            {name: settings.providers[name].concurrency for name in buckets},
            settings.retry,
            LedgerClaims(engine.ledger, engine.verifier),
            LedgerSink(engine.ledger, recording),
            engine.stopping.is_set,
            lambda provider: outcomes.resend_in_doubt(settings, provider),
            scrubber=Scrubber.from_settings(settings),
        )

    async def close(self) -> None:
        for provider in self._owned:
            with contextlib.suppress(Exception):  # best effort: the run's outcomes are recorded
                await provider.close()
        self._owned.clear()

    def lane_width(self, channel: str) -> int:
        """A dispatcher per connection the channel's providers allow."""
        assert self._settings is not None, "open() first"
        route = self._settings.channels[channel]
        return sum(self._settings.providers[name].concurrency for name in route.names)
