"""The engine: plan → per-channel lanes → decide → claim → send → record, on any backend.

One Engine drives one run to its end (or to an interruption): a planning task when the run has input
left, and per channel a lane with its feeder and its dispatchers (pipeline/lanes.py,
pipeline/dispatch.py). Where prepared deliveries go is the backend's business (pipeline/backend.py):
the in-process Sender, the same Sender in sibling processes on shards of the outbox, or Redis
workers. Every state change goes through the ledger (group commit), which commits an intent before
its provider call and the outcome after.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from notifyctl.models import DeliveryState, RunState
from notifyctl.pipeline import runlog
from notifyctl.pipeline.backend import Dispatcher
from notifyctl.pipeline.dispatch import LaneDispatch
from notifyctl.pipeline.envelope import EnvelopeBuilder
from notifyctl.pipeline.idempotency import IdempotencyStore
from notifyctl.pipeline.lanes import Feeder, Lane
from notifyctl.pipeline.planner import PlanItem, Planner, PlanResult
from notifyctl.pipeline.queue import PRIORITY, LaneQueue
from notifyctl.pipeline.router import CircuitBreaker, Router
from notifyctl.pipeline.verify import Verifier
from notifyctl.policy.decide import Policy
from notifyctl.providers.base import Provider
from notifyctl.settings import Settings
from notifyctl.store import outbox, runs
from notifyctl.store.db import BUSY_WRITER_AUTOCHECKPOINT, Checkpointer, WriteLock, connect
from notifyctl.store.ledger import Ledger
from notifyctl.store.secrets import installation_secret
from notifyctl.templates.store import TemplateStore

Clock = Callable[[], datetime]
RELEASE_DUE_EVERY_S = 15.0


def utc_clock() -> datetime:
    return datetime.now(UTC)


class Backend(Protocol):
    """Where an engine's prepared deliveries go, and which of the run's rows it feeds."""

    shard: tuple[int, int]  # (k, n): this engine feeds the rows whose id is k modulo n
    follows: bool  # the run is planned by another process; learn the end of planning from the database

    async def open(self, engine: Engine) -> Dispatcher:
        """Open what the dispatcher needs (providers, buckets, connections) for this engine's run, and
        settle what an earlier session of the run left in flight (a crash: resume)."""

    async def close(self) -> None:
        """Release it; the engine has stopped dispatching."""

    def lane_width(self, channel: str) -> int:
        """How many deliveries of a channel this engine dispatches at once."""


class Progress(Protocol):
    """Where the engine reports progress; the CLI draws it, tests count it. Never prints itself."""

    def planned(self, channel: str, state: str, n: int) -> None: ...

    def outcome(self, channel: str, state: str) -> None: ...

    def counted(self) -> None:
        """Everything is planned: the totals reported so far are final."""


class NullProgress:
    def planned(self, channel: str, state: str, n: int) -> None:
        pass

    def outcome(self, channel: str, state: str) -> None:
        pass

    def counted(self) -> None:
        pass


@dataclass
class PlanBatch:
    items: list[PlanItem]
    cursor: tuple[int, int] | None  # (byte offset, line) after the batch, for resumable planning
    last: bool


# Batches to plan, read (parsed, validated) in the planning thread together with their planning.
PlanSource = Iterator[PlanBatch]


@dataclass
class RunOutcome:
    run_id: str
    state: str
    counts: dict[str, dict[str, int]]
    elapsed_s: float
    sent_this_session: int
    problems: list[str] = field(default_factory=list)  # providers stopped by the churn guard: why
    reasons: dict[str, int] = field(default_factory=dict)  # "state:reason" → how many (not sent)
    rejected_rows: int = 0  # input rows refused and left out (--skip-invalid)


class Engine:
    def __init__(
        self,
        settings: Settings,
        conn: sqlite3.Connection,
        templates: TemplateStore,
        *,
        clock: Clock = utc_clock,
        progress: Progress | None = None,
        providers: dict[str, Provider] | None = None,
        backend: Backend,
        idempotency: IdempotencyStore | None = None,
    ) -> None:
        """`backend`: where prepared deliveries go (backends/); `providers`: accounts already open
        (tests), the backend opens the others."""
        self.settings = settings
        self.conn = conn
        self.templates = templates
        self.clock = clock
        self.progress = progress or NullProgress()
        self.backend = backend
        self.secret = installation_secret(conn, settings)  # once: every message's unsubscribe link uses it
        self.policy = Policy(settings, conn, clock, self.secret)
        self.idempotency = idempotency or IdempotencyStore(settings.idempotency_window_hours * 3600)
        self.planner = Planner(conn, self.policy, self.idempotency, clock)
        self.providers: dict[str, Provider] = dict(providers or {})
        self.breakers: dict[str, CircuitBreaker] = {}
        self.lanes: dict[str, Lane] = {}
        self.stopping = asyncio.Event()
        self.run_id = ""
        self.ledger: Ledger | None = None
        self.verifier = Verifier(self.policy, clock)
        self.feeder = Feeder(settings, clock, self.stopping, self._priority, self.backend.shard)
        self.siblings: list[asyncio.subprocess.Process] = []
        self._ready = asyncio.Event()

    async def ready(self) -> None:
        """Wait until the run's lanes are open (for `submit` in service mode)."""
        await self._ready.wait()

    def submit(self, run_id: str, items: list[PlanItem]) -> PlanResult:
        """Plan more deliveries into a running service-mode run; they are sent in the background."""
        result = self.planner.plan_batch(run_id, items)
        for (channel, state), n in result.by_channel_state.items():
            self.progress.planned(channel, state, n)
        for lane in self.lanes.values():
            lane.wake.set()
        return result

    def breaker(self, name: str) -> CircuitBreaker:
        if name not in self.breakers:
            self.breakers[name] = CircuitBreaker(self.settings.breaker)
        return self.breakers[name]

    def _is_apns(self, name: str) -> bool:
        provider = self.settings.providers.get(name)
        return provider is not None and provider.type == "apns"

    # --- driving a run ----------------------------------------------------------------------

    async def run(
        self,
        run_id: str,
        source: PlanSource | None = None,
        *,
        allow_template_change: bool = False,
        service: bool = False,
    ) -> RunOutcome:
        """Drive a run to its end. With service=True (``notifyctl serve``) the run stays open for
        `submit()` until `stop()`."""
        started = time.monotonic()
        self.run_id = run_id
        run = runs.get_run(self.conn, run_id)
        assert run is not None, run_id
        sent_before = runs.sent_count(self.conn, run_id)
        channels = [c for c in run.channels if c in self.settings.channels]
        self.builder = EnvelopeBuilder(
            self.settings, self.templates, run.data, allow_template_change, unsubscribe_secret=self.secret.current
        )
        self.ledger = Ledger(self.settings.database_path)
        syncer: asyncio.Task[None] | None = None
        await self.feeder.open()
        # The run's busy writers leave checkpoints to this thread (one per process; they overlap harmlessly).
        checkpointer = Checkpointer(self.settings.database_path)
        checkpointer.start()
        await self.ledger.start()
        try:
            for channel in channels:
                route = self.settings.channels[channel]
                for name in route.names:
                    self.breaker(name)
                # A push token goes through a provider of its push service (Router.for_service).
                services = {name: "apns" for name in route.names if self._is_apns(name)}
                router = Router(route, self.breakers, services=services)
                self.lanes[channel] = Lane(channel, router, LaneQueue(route.queue_size))
            dispatcher = await self.backend.open(self)
            lane_dispatch = LaneDispatch(
                dispatcher, self.builder, self.verifier, self.ledger, self.feeder, self.providers, self.progress.outcome
            )
            for channel, by_state in runs.counts(self.conn, run_id).items():
                for state, n in by_state.items():
                    self.progress.planned(channel, state, n)
            if not self.backend.follows:
                runs.set_run_state(self.conn, run_id, RunState.running, started=True)
            runlog.run_started(run_id, run.kind, self.backend.shard)
            self.feeder.planning_done = source is None and not service and not self.backend.follows
            if self.feeder.planning_done:
                self.progress.counted()
            self._ready.set()
            tasks: list[asyncio.Task[Any]] = []
            if source is not None:
                tasks.append(asyncio.create_task(self._plan(run_id, source), name="planner"))
            background: list[asyncio.Task[None]] = []
            if service:
                background.append(asyncio.create_task(self._release_due_every(run_id), name="release-due"))
            if self.siblings and getattr(self.progress, "enabled", False) and hasattr(self.progress, "sync"):
                syncer = asyncio.create_task(self._sync_progress_every(run_id, 2.0), name="progress")
            poll = self._planning_over if self.backend.follows else None
            for lane in self.lanes.values():
                lane.workers = self.backend.lane_width(lane.channel)
                tasks.append(asyncio.create_task(self.feeder.feed(run_id, lane, poll), name=f"feed-{lane.channel}"))
                tasks.extend(
                    asyncio.create_task(lane_dispatch.work(lane), name=f"work-{lane.channel}")
                    for _ in range(lane.workers)
                )
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                self.stopping.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
        finally:
            try:
                await self.backend.close()
            finally:
                await self.feeder.close()
                await self.ledger.stop()
                checkpointer.stop()
        try:
            for sibling in self.siblings:  # the other shards of this run, in their own processes
                await sibling.wait()
        finally:
            if syncer is not None:
                syncer.cancel()
                await asyncio.gather(syncer, return_exceptions=True)
                getattr(self.progress, "sync")(runs.counts(self.conn, run_id))  # noqa: B009
        state = self._final_state(run_id)
        if not self.backend.follows:
            with self.conn:
                runs.set_run_state(self.conn, run_id, state, finished=state != RunState.interrupted)
        sent = runs.sent_count(self.conn, run_id) - sent_before
        counts, problems = runs.counts(self.conn, run_id), runs.stopped_providers(self.conn, run_id)
        elapsed_s = time.monotonic() - started
        runlog.run_finished(run_id, state, counts, elapsed_s, sent)
        reasons, rejected = runs.reasons(self.conn, run_id), int(run.options.get("rejected_count", 0))
        return RunOutcome(run_id, state, counts, elapsed_s, sent, problems, reasons, rejected)

    def stop(self) -> None:
        """Stop cleanly: no new sends; requests in flight finish and are recorded."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for lane in self.lanes.values():
            lane.wake.set()
            lane.queue.stop(lane.workers, now=True)
        for sibling in self.siblings:
            if sibling.returncode is None:
                sibling.send_signal(signal.SIGINT)  # it stops as this engine does

    def _final_state(self, run_id: str) -> RunState:
        if self.stopping.is_set():
            return RunState.interrupted
        run = runs.get_run(self.conn, run_id)
        if run is not None and not run.planned:
            return RunState.interrupted
        by_state: dict[str, int] = {}
        for states in runs.counts(self.conn, run_id).values():
            for state, n in states.items():
                by_state[state] = by_state.get(state, 0) + n
        if by_state.get(DeliveryState.pending) or by_state.get(DeliveryState.inflight):
            return RunState.interrupted
        if by_state.get(DeliveryState.deferred):
            return RunState.waiting
        if by_state.get(DeliveryState.dead) or by_state.get(DeliveryState.in_doubt):
            return RunState.completed_with_failures
        return RunState.completed

    def _planning_over(self) -> bool:
        """For an engine that does not plan: whether the planning process is done (or gone)."""
        run = runs.get_run(self.conn, self.run_id)
        return run is None or run.planned or run.state not in (RunState.running, RunState.scheduled)

    def _priority(self, category: str) -> int:
        return PRIORITY[self.settings.category(category).priority]

    # --- planning and service mode ----------------------------------------------------------

    async def _plan(self, run_id: str, source: PlanSource) -> None:
        conn = connect(self.settings.database_path, autocheckpoint=BUSY_WRITER_AUTOCHECKPOINT)
        # It writes beside the ledgers: queued with them on the write lock.
        write_lock = WriteLock(self.settings.database_path)
        planner = Planner(
            conn, Policy(self.settings, conn, self.clock, self.secret), self.idempotency, self.clock, write_lock
        )

        def step() -> PlanResult | None:
            batch = next(source, None)
            if batch is None:
                return None
            return planner.plan_batch(run_id, batch.items, cursor=batch.cursor, planned=batch.last)

        try:
            while not self.stopping.is_set():
                # Reading the input and planning happen in a thread, on the planner's own connection:
                # the senders keep going meanwhile.
                result = await asyncio.to_thread(step)
                if result is None:
                    break
                for (channel, state), n in result.by_channel_state.items():
                    self.progress.planned(channel, state, n)
                for lane in self.lanes.values():
                    lane.wake.set()
                await asyncio.sleep(0)
        finally:
            conn.close()
            write_lock.close()
            self.feeder.planning_done = True
            self.progress.counted()
            for lane in self.lanes.values():
                lane.wake.set()

    async def release_due(self, run_id: str) -> int:
        """Deferred deliveries whose time has come (quiet hours over), sent by this running engine.
        A service-mode run (`serve`) never ends, so `resume --due` cannot do it for it."""
        released = outbox.deliveries_by_id(self.conn, outbox.release_due_deferred(self.conn, run_id, self.clock()))
        for channel, lane in self.lanes.items():
            rows = [r for r in released if r["channel"] == channel]
            if rows:
                await self.feeder.enqueue(lane, self.feeder.page(self.conn, self.policy, channel, rows))
        return len(released)

    async def _release_due_every(self, run_id: str) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.settings.release_due_every_s)
            await self.release_due(run_id)

    async def _sync_progress_every(self, run_id: str, every_s: float) -> None:
        """The progress bar of a run sent from several processes: the siblings' outcomes are only in
        the database, so the bar is set from its counts now and then."""
        sync = getattr(self.progress, "sync")  # noqa: B009 - not part of the Progress protocol
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(sqlite3.Error):
                sync(runs.counts(self.conn, run_id))
