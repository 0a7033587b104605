"""The engine: plan → per-channel bulkhead → token bucket → intent → render/send → outcome.

One Engine drives one run to the end (or to an interruption). Each channel is a lane with its
own bounded queue, its own feeder reading pending rows from the outbox, and its own workers, so a
slow provider holds up only its own channel. Every state change goes through the Ledger, which
commits the intent before the provider is called and the outcome after.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from notifyctl.errors import TemplateError
from notifyctl.models import Decision, Envelope, User
from notifyctl.pipeline.envelope import EnvelopeBuilder, endpoint_credentials
from notifyctl.pipeline.idempotency import IdempotencyStore
from notifyctl.pipeline.limiter import Limiter, TokenBucket
from notifyctl.pipeline.outcomes import LedgerRecorder
from notifyctl.pipeline.planner import PlanItem, Planner, PlanResult
from notifyctl.pipeline.queue import PRIORITY, LaneQueue
from notifyctl.pipeline.router import CircuitBreaker, Router
from notifyctl.pipeline.sender import Sender
from notifyctl.policy.decide import Policy, PolicyView
from notifyctl.providers.accounts import open_account
from notifyctl.providers.base import Provider
from notifyctl.settings import Settings
from notifyctl.store import directory, runs
from notifyctl.store.db import BUSY_WRITER_AUTOCHECKPOINT, Checkpointer, WriteLock, connect, iso
from notifyctl.store.ledger import Ledger
from notifyctl.templates.store import TemplateStore

Clock = Callable[[], datetime]
FEED_PAGE = 500


def utc_clock() -> datetime:
    return datetime.now(UTC)


class Progress(Protocol):
    """Where the engine reports progress; the CLI draws it, tests count it. Never prints itself."""

    def planned(self, channel: str, state: str, n: int) -> None: ...

    def outcome(self, channel: str, state: str) -> None: ...


class NullProgress:
    def planned(self, channel: str, state: str, n: int) -> None:
        pass

    def outcome(self, channel: str, state: str) -> None:
        pass


@dataclass
class PlanBatch:
    items: list[PlanItem]
    cursor: tuple[int, int] | None  # (byte offset, line) after the batch, for resumable planning
    last: bool


# Batches to plan, read (parsed, validated) in the planning thread together with their planning.
PlanSource = Iterator[PlanBatch]


@dataclass
class Page:
    """A page of pending rows with what dispatching them needs from the directory."""

    rows: list[sqlite3.Row]
    users: dict[str, User]
    endpoints: dict[str, tuple[list[str], str | None]]
    view: PolicyView


@dataclass
class Lane:
    channel: str
    router: Router
    queue: LaneQueue
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    outstanding: int = 0
    feeding_done: bool = False
    workers: int = 0
    finished: bool = False


@dataclass
class RunOutcome:
    run_id: str
    state: str
    counts: dict[str, dict[str, int]]
    elapsed_s: float
    sent_this_session: int


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
        shard: tuple[int, int] = (0, 1),
        follow: bool = False,
    ) -> None:
        """`shard=(k, n)`: this engine sends only the rows whose id is k modulo n, at 1/n of each
        provider's rate (the other shards run in sibling processes). `follow`: a sibling of the
        planning process, which learns from the database when planning is over and leaves the run's
        state to the parent."""
        self.settings = settings
        self.shard = shard
        self.follow = follow
        self.siblings: list[asyncio.subprocess.Process] = []
        self.conn = conn
        self.templates = templates
        self.clock = clock
        self.progress = progress or NullProgress()
        self.policy = Policy(settings, conn, clock)
        self.idempotency = IdempotencyStore(settings.idempotency_window_hours * 3600)
        self.planner = Planner(conn, self.policy, self.idempotency, clock)
        self.providers: dict[str, Provider] = dict(providers or {})
        self._owned_providers: list[Provider] = []
        self.limiters: dict[str, Limiter] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.lanes: dict[str, Lane] = {}
        self.stopping = asyncio.Event()
        self._retry_tasks: set[asyncio.Task[None]] = set()
        self._planning_done = False
        self.ledger: Ledger | None = None
        self._ready = asyncio.Event()
        # Dispatch-time decisions made on a page's policy answers, to check at the intent's commit.
        self.verify_at_intent = True
        self._unverified: dict[int, tuple[int, Lane, dict[str, Any]]] = {}
        # The feeders' reads run in a thread of their own, on a connection of their own (see _feed).
        self._reader: ThreadPoolExecutor | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._reader_policy: Policy | None = None

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

    # --- set-up -----------------------------------------------------------------------------

    async def _open_providers(self, channels: list[str]) -> None:
        for channel in channels:
            route = self.settings.channels.get(channel)
            if route is None:
                continue  # planning already skipped these as no_provider
            for name in route.names:
                if name in self.limiters:
                    continue
                conf = self.settings.providers[name]
                if name not in self.providers:
                    self.providers[name] = await open_account(self.settings, name)
                    self._owned_providers.append(self.providers[name])
                shards = self.shard[1]
                self.limiters[name] = TokenBucket(conf.rate / shards, max(1.0, conf.bucket_size / shards))
                self.breakers[name] = CircuitBreaker(self.settings.breaker)

    def _lane_workers(self, route_names: list[str]) -> int:
        return sum(self.settings.providers[n].concurrency for n in route_names)

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
        run = runs.get_run(self.conn, run_id)
        assert run is not None, run_id
        sent_before = runs.sent_count(self.conn, run_id)
        channels = [c for c in run.channels if c in self.settings.channels]
        self.builder = EnvelopeBuilder(self.settings, self.templates, run.data, allow_template_change)
        self.ledger = Ledger(self.settings.database_path)
        syncer: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._reader = reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifyctl-reader")
        await loop.run_in_executor(reader, self._open_reader)
        # The run's busy writers leave checkpoints to this thread (one per process; they overlap harmlessly).
        checkpointer = Checkpointer(self.settings.database_path)
        checkpointer.start()
        await self.ledger.start()
        try:
            await self._open_providers(channels)
            self.sender = Sender(
                self.providers,
                self.limiters,
                self.breakers,
                {n: self.settings.providers[n].concurrency for n in self.limiters},
                self.settings.retry,
                LedgerRecorder(self.ledger, self.settings.webhook_disable_after_hours * 3600, self._still_allowed),
                self.stopping.is_set,
            )
            for channel in channels:
                route = self.settings.channels[channel]
                self.lanes[channel] = Lane(channel, Router(route, self.breakers), LaneQueue(route.queue_size))
            for channel, by_state in runs.counts(self.conn, run_id).items():
                for state, n in by_state.items():
                    self.progress.planned(channel, state, n)
            if not self.follow:
                runs.set_run_state(self.conn, run_id, "running", started=True)
            self._planning_done = source is None and not service and not self.follow
            self._ready.set()
            tasks: list[asyncio.Task[Any]] = []
            if source is not None:
                tasks.append(asyncio.create_task(self._plan(run_id, source), name="planner"))
            releaser = (
                asyncio.create_task(self._release_due_every(run_id, 15.0), name="release-due") if service else None
            )
            background = [releaser] if releaser else []
            if self.siblings and getattr(self.progress, "enabled", False) and hasattr(self.progress, "sync"):
                syncer = asyncio.create_task(self._sync_progress_every(run_id, 2.0), name="progress")
            for lane in self.lanes.values():
                tasks.append(asyncio.create_task(self._feed(run_id, lane), name=f"feed-{lane.channel}"))
                tasks.extend(asyncio.create_task(work, name=f"work-{lane.channel}") for work in self._lane_work(lane))
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                self.stopping.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            finally:
                for task in [*self._retry_tasks, *background]:
                    task.cancel()
                await asyncio.gather(*self._retry_tasks, *background, return_exceptions=True)
        finally:
            await self.ledger.stop()
            checkpointer.stop()
            await loop.run_in_executor(reader, self._close_reader)
            reader.shutdown(wait=False)
            for provider in self._owned_providers:
                with contextlib.suppress(Exception):
                    await provider.close()
        try:
            for sibling in self.siblings:  # the other shards of this run, in their own processes
                await sibling.wait()
        finally:
            if syncer is not None:
                syncer.cancel()
                await asyncio.gather(syncer, return_exceptions=True)
                getattr(self.progress, "sync")(runs.counts(self.conn, run_id))  # noqa: B009
        state = self._final_state(run_id)
        if not self.follow:
            with self.conn:
                runs.set_run_state(self.conn, run_id, state, finished=state != "interrupted")
        sent = runs.sent_count(self.conn, run_id) - sent_before
        return RunOutcome(run_id, state, runs.counts(self.conn, run_id), time.monotonic() - started, sent)

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
                sibling.send_signal(signal.SIGINT)

    def _final_state(self, run_id: str) -> str:
        if self.stopping.is_set():
            return "interrupted"
        run = runs.get_run(self.conn, run_id)
        if run is not None and not run.planned:
            return "interrupted"
        by_state: dict[str, int] = {}
        for states in runs.counts(self.conn, run_id).values():
            for state, n in states.items():
                by_state[state] = by_state.get(state, 0) + n
        if by_state.get("pending") or by_state.get("inflight"):
            return "interrupted"
        if by_state.get("deferred"):
            return "waiting"
        if by_state.get("dead") or by_state.get("in_doubt"):
            return "completed_with_failures"
        return "completed"

    # --- stages -----------------------------------------------------------------------------

    async def _plan(self, run_id: str, source: PlanSource) -> None:
        conn = connect(self.settings.database_path, autocheckpoint=BUSY_WRITER_AUTOCHECKPOINT)
        # It writes beside the ledgers: queued with them on the write lock.
        write_lock = WriteLock(self.settings.database_path)
        planner = Planner(conn, Policy(self.settings, conn, self.clock), self.idempotency, self.clock, write_lock)

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
            self._planning_done = True
            for lane in self.lanes.values():
                lane.wake.set()

    async def _feed(self, run_id: str, lane: Lane) -> None:
        """Read pending rows in id order into the lane's bounded queue, with their users.

        The pages are read in the reader thread, on its own connection: SQLite lets the GIL go while
        it works, and the event loop's thread, had it made the call, would then wait for the GIL
        behind the planner's thread (for up to the switch interval) before sending anything more."""
        after_id = 0
        before_id: int | None = None  # once this shard is done: helping the others, from their end
        loop, reader = asyncio.get_running_loop(), self._reader
        assert reader is not None
        while not self.stopping.is_set():
            lane.wake.clear()
            done_planning = self._planning_done
            page = await loop.run_in_executor(reader, self._read_page, run_id, lane.channel, after_id, before_id)
            if page is not None:
                if before_id is None:
                    after_id = page.rows[-1]["id"]
                else:
                    before_id = page.rows[-1]["id"]
                await self._enqueue(lane, page)
                continue
            if done_planning:
                if before_id is None and self.shard[1] > 1:
                    # This process's shard is all queued while another process still has rows to
                    # send (the planning parent falls behind its siblings): take theirs from the end
                    # down. Where both reach the same row, the first intent to commit claims it.
                    before_id = 1 << 62
                    continue
                break
            if self.follow:
                # The planner is in the parent process: poll for its rows and for the end of planning.
                run = runs.get_run(self.conn, run_id)
                self._planning_done = run is None or run.planned or run.state not in ("running", "scheduled")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.wake.wait(), 0.05)
                continue
            await lane.wake.wait()
        lane.feeding_done = True
        await self._maybe_finish(lane)

    def _open_reader(self) -> None:
        """In the reader thread: its connection and its Policy (for the pages' answers)."""
        self._reader_conn = connect(self.settings.database_path, migrate=False)  # the engine's connection did
        self._reader_policy = Policy(self.settings, self._reader_conn, self.clock)

    def _close_reader(self) -> None:
        if self._reader_conn is not None:
            self._reader_conn.close()
            self._reader_conn = None

    def _read_page(self, run_id: str, channel: str, after_id: int, before_id: int | None) -> Page | None:
        """In the reader thread: the next page of pending rows (this shard's after `after_id`, or with
        `before_id` the other shards' below it) and their directory answers."""
        assert self._reader_conn is not None and self._reader_policy is not None
        conn = self._reader_conn
        if before_id is None:
            rows = runs.pending_page(conn, run_id, channel, after_id, FEED_PAGE, self.shard)
        else:
            rows = runs.others_pending_page(conn, run_id, channel, before_id, FEED_PAGE, self.shard)
        return self._page(conn, self._reader_policy, channel, rows) if rows else None

    def _page(self, conn: sqlite3.Connection, policy: Policy, channel: str, rows: list[sqlite3.Row]) -> Page:
        user_ids = [r["user_id"] for r in rows if r["user_id"]]
        # Without push tokens and endpoints: the address is in the row, the secrets come just below.
        users = directory.get_users(conn, user_ids, contacts=False)
        endpoints = endpoint_credentials(conn, user_ids, self.clock()) if channel == "webhook" else {}
        # The page's suppressions and preferences in a few queries; each dispatch-time decision
        # re-reads only the directory's change counter (see Policy.view).
        view = policy.view(channel, [r["address"] for r in rows if r["address"]], list(users))
        return Page(rows, users, endpoints, view)

    async def _enqueue(self, lane: Lane, page: Page) -> None:
        """A page's pending rows into the lane's queue (or the retry timer), with their users and endpoints."""
        users, endpoints, view = page.users, page.endpoints, page.view
        now = time.time()
        for row in page.rows:
            if self.stopping.is_set():
                return
            item = {
                "row": row,
                "user": users.get(row["user_id"]) if row["user_id"] else None,
                "attempts": row["attempts"],
                "priority": self._priority(row["category"]),
                "endpoint": endpoints.get(row["user_id"], ([], None)),
                "view": view,
            }
            lane.outstanding += 1
            due = row["next_attempt_at"]
            if due and due > now:
                self._schedule_retry(lane, item, due - now)
            else:
                await lane.queue.put(item, item["priority"])

    async def release_due(self, run_id: str) -> int:
        """Deferred deliveries whose time has come (quiet hours over), sent by this running engine.
        A service-mode run (`serve`) never ends, so `resume --due` cannot do it for it."""
        released = runs.deliveries_by_id(self.conn, runs.release_due_deferred(self.conn, run_id, self.clock()))
        for channel, lane in self.lanes.items():
            rows = [r for r in released if r["channel"] == channel]
            if rows:
                await self._enqueue(lane, self._page(self.conn, self.policy, channel, rows))
        return len(released)

    async def _release_due_every(self, run_id: str, every_s: float) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(every_s)
            await self.release_due(run_id)

    async def _sync_progress_every(self, run_id: str, every_s: float) -> None:
        """The progress bar of a run sent from several processes: the siblings' outcomes are only in
        the database, so the bar is set from its counts now and then."""
        sync = getattr(self.progress, "sync")  # noqa: B009 - not part of the Progress protocol
        while True:
            await asyncio.sleep(every_s)
            sync(runs.counts(self.conn, run_id))

    async def _maybe_finish(self, lane: Lane) -> None:
        if lane.feeding_done and lane.outstanding == 0 and not lane.finished:
            lane.finished = True
            lane.queue.stop(lane.workers, now=False)

    def _priority(self, category: str) -> int:
        return PRIORITY[self.settings.category(category).priority]

    def _schedule_retry(self, lane: Lane, item: dict[str, Any], delay_s: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay_s)
            if not self.stopping.is_set():
                await lane.queue.put(item, item["priority"])

        task = asyncio.create_task(later())
        self._retry_tasks.add(task)
        task.add_done_callback(self._retry_tasks.discard)

    def _lane_work(self, lane: Lane) -> list[Coroutine[Any, Any, None]]:
        """The consumers of a lane's queue: here, in-process senders. The scale-out coordinator
        overrides this to publish prepared envelopes to Redis and collect the workers' outcomes."""
        lane.workers = self._lane_workers(lane.router.provider_names)
        return [self._work(lane) for _ in range(lane.workers)]

    async def _work(self, lane: Lane) -> None:
        while (item := await lane.queue.get()) is not None:
            envelope = await self._prepare(lane, item)
            if envelope is None:
                await self._finished(lane)
                continue
            batch = [(item, envelope)]
            provider_name = lane.router.pick()
            batch_size = self.providers[provider_name].capabilities.batch_size
            # A provider with a batch API (FCM, Postmark) takes what is already queued in one call.
            while len(batch) < batch_size and (more := lane.queue.get_nowait()) is not None:
                extra = await self._prepare(lane, more)
                if extra is None:
                    await self._finished(lane)
                else:
                    batch.append((more, extra))
            attempts = [queued["attempts"] + 1 for queued, _ in batch]
            envelopes = [e for _, e in batch]
            reroutable = len(lane.router.provider_names) > 1
            outcomes = await self.sender.transmit_batch(envelopes, provider_name, attempts, reroutable=reroutable)
            if outcomes[0].state == "reroute":  # its breaker opened while they waited: the router knows better
                outcomes = []
                while len(outcomes) < len(envelopes):  # in calls the newly picked provider can take
                    provider_name = lane.router.pick()
                    done, size = len(outcomes), self.providers[provider_name].capabilities.batch_size
                    outcomes += await self.sender.transmit_batch(
                        envelopes[done : done + size], provider_name, attempts[done : done + size]
                    )
            for (queued, _), attempt, outcome in zip(batch, attempts, outcomes, strict=True):
                if outcome.state == "stopped":
                    continue  # not attempted, or attempted and left pending: resume picks it up
                if outcome.state == "withdrawn":  # settled and reported by _still_allowed, or taken
                    self._unverified.pop(queued["row"]["id"], None)  # by another sender process
                    await self._finished(lane)
                    continue
                queued["attempts"] = attempt
                if outcome.state == "retry":
                    self._schedule_retry(lane, queued, outcome.delay_s)
                    continue
                self.progress.outcome(lane.channel, outcome.state)
                await self._finished(lane)

    async def _finished(self, lane: Lane) -> None:
        lane.outstanding -= 1
        await self._maybe_finish(lane)

    def _decide(self, item: dict[str, Any], view: PolicyView | None, verify: bool = True) -> Decision:
        row: sqlite3.Row = item["row"]
        user: User | None = item["user"]
        return self.policy.decide(
            channel=row["channel"],
            category=row["category"],
            address=row["address"],
            user_id=row["user_id"] if user else None,
            timezone=user.timezone if user else None,
            phone=user.phone if user else None,
            now=self.clock(),
            view=view,
            verify=verify,
        )

    def _still_allowed(self, envelope: Envelope, attempt: int, version: int) -> bool:
        """Asked by the recorder once the intent is committed (with the directory's change counter of
        that commit): if the directory changed since the page's policy answers were read, decide
        again; a delivery that may no longer go out is settled here and not sent."""
        assert self.ledger is not None
        checked = self._unverified.pop(envelope.delivery_id, None)
        if checked is None or checked[0] == version:
            return True
        _, lane, item = checked
        decision = self._decide(item, None)
        if decision.action == "send":
            return True
        self._settle_by_policy(lane, envelope.delivery_id, decision, withdrawn_attempt=attempt)
        return False

    def _settle_by_policy(
        self, lane: Lane, delivery_id: int, decision: Decision, withdrawn_attempt: int | None = None
    ) -> None:
        """Record a skip or deferral decided at dispatch (undoing the attempt's intent, if one was made)."""
        assert self.ledger is not None
        state = "skipped" if decision.action == "skip" else "deferred"
        until = iso(decision.until) if decision.until else None
        if withdrawn_attempt is None:
            self.ledger.post(lambda c: runs.mark_decided(c, delivery_id, state, decision.reason, until))
        else:
            attempt = withdrawn_attempt
            self.ledger.post(lambda c: runs.withdraw_intent(c, delivery_id, attempt, state, decision.reason, until))
        self.progress.outcome(lane.channel, state)

    async def _prepare(self, lane: Lane, item: dict[str, Any]) -> Envelope | None:
        """Policy again (an opt-out lands before the very next message), then rendering. Returns the
        envelope to send, or None when the delivery was settled here (skipped, deferred, dead).

        In-process, the decision uses the page's policy answers without re-reading the directory
        here: the intent's commit reads the directory's change counter under the write lock, and
        `_still_allowed` decides again if it moved. (The scale-out coordinator verifies here.)"""
        assert self.ledger is not None
        row: sqlite3.Row = item["row"]
        user: User | None = item["user"]
        delivery_id = row["id"]
        view: PolicyView | None = item.get("view")
        unverified = view is not None and self.verify_at_intent
        decision = self._decide(item, view, verify=not unverified)
        if decision.action != "send":
            self._settle_by_policy(lane, delivery_id, decision)
            return None
        try:
            secrets, client_cert = item["endpoint"]
            envelope = self.builder.build(row, user, secrets, client_cert)
            if unverified:
                assert view is not None
                self._unverified[delivery_id] = (view.version, lane, item)
            return envelope
        except TemplateError as exc:
            message = str(exc)
            self.ledger.post(
                lambda c: runs.mark_dead(
                    c,
                    delivery_id,
                    attempt=None,
                    outcome="template_error",
                    latency_ms=None,
                    code=None,
                    error_class="TemplateError",
                    message=message,
                    envelope=None,
                )
            )
            self.progress.outcome(lane.channel, "dead")
            return None
