"""Lanes: one per channel, each with its own bounded queue, feeder and dispatchers (a bulkhead), so a
slow provider holds up only its own channel.

The feeder reads the run's pending rows in id order into the lane's queue, a page at a time, with
what dispatching them needs from the directory (users, endpoint secrets, the page's policy
answers). Pages are read in a thread of their own, on a connection of their own: SQLite lets the
GIL go while it works, and the event loop, had it made the call, would then wait for the GIL behind
the planner's thread before sending anything more. Rows not yet due (a retry's backoff) wait on a
timer; a lane is finished once its feeder is done and nothing it queued is outstanding.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from notifyctl.models import User
from notifyctl.pipeline.queue import LaneQueue
from notifyctl.pipeline.router import Router
from notifyctl.policy.decide import Policy, PolicyView
from notifyctl.settings import Settings
from notifyctl.store import directory, endpoints, outbox
from notifyctl.store.db import connect

FEED_PAGE = 500
FOLLOW_POLL_S = 0.05


@dataclass(slots=True)
class Queued:
    """A pending delivery in a lane, with what dispatching it needs."""

    row: sqlite3.Row
    user: User | None
    attempts: int
    priority: int
    endpoint: tuple[list[str], str | None]  # webhook signing secrets, client certificate
    view: PolicyView | None  # its page's policy answers


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
    queue: LaneQueue[Queued]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    outstanding: int = 0
    feeding_done: bool = False
    workers: int = 0
    finished: bool = False

    def maybe_finish(self) -> None:
        if self.feeding_done and self.outstanding == 0 and not self.finished:
            self.finished = True
            self.queue.stop(self.workers, now=False)

    def done_with_one(self) -> None:
        self.outstanding -= 1
        self.maybe_finish()


class Feeder:
    """Reads pending rows into the lanes' queues (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime],
        stopping: asyncio.Event,
        priority: Callable[[str], int],
        shard: tuple[int, int],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.stopping = stopping
        self.priority = priority
        self.shard = shard
        self.planning_done = False
        self._reader: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._policy: Policy | None = None
        self._timers: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifyctl-reader")
        await loop.run_in_executor(self._reader, self._open_reader, self.settings.database_path)

    def _open_reader(self, path: Path) -> None:
        self._conn = connect(path, migrate=False)  # the engine's connection did
        self._policy = Policy(self.settings, self._conn, self.clock)

    async def close(self) -> None:
        for task in self._timers:
            task.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        if self._reader is not None:
            await asyncio.get_running_loop().run_in_executor(self._reader, self._close_reader)
            self._reader.shutdown(wait=False)

    def _close_reader(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def feed(self, run_id: str, lane: Lane, poll: Callable[[], bool] | None) -> None:
        """Read pending rows in id order into the lane's queue until planning is done and none are
        left. `poll`: for an engine that does not plan (a sibling sender process), asks the database
        whether planning is over."""
        after_id = 0
        before_id: int | None = None  # once this shard is done: helping the others, from their end
        loop, reader = asyncio.get_running_loop(), self._reader
        assert reader is not None
        while not self.stopping.is_set():
            lane.wake.clear()
            done_planning = self.planning_done
            page = await loop.run_in_executor(reader, self._read_page, run_id, lane.channel, after_id, before_id)
            if page is not None:
                if before_id is None:
                    after_id = page.rows[-1]["id"]
                else:
                    before_id = page.rows[-1]["id"]
                await self.enqueue(lane, page)
                continue
            if done_planning:
                if before_id is None and self.shard[1] > 1:
                    # This process's shard is all queued while another process still has rows to
                    # send (the planning parent falls behind its siblings): take theirs from the end
                    # down. Where both reach the same row, the first intent to commit claims it.
                    before_id = 1 << 62
                    continue
                break
            if poll is not None:
                self.planning_done = poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.wake.wait(), FOLLOW_POLL_S)
                continue
            await lane.wake.wait()
        lane.feeding_done = True
        lane.maybe_finish()

    def _read_page(self, run_id: str, channel: str, after_id: int, before_id: int | None) -> Page | None:
        """In the reader thread: the next page of pending rows (this shard's after `after_id`, or with
        `before_id` the other shards' below it) and their directory answers."""
        assert self._conn is not None and self._policy is not None
        conn = self._conn
        if before_id is None:
            rows = outbox.pending_page(conn, run_id, channel, after_id, FEED_PAGE, self.shard)
        else:
            rows = outbox.others_pending_page(conn, run_id, channel, before_id, FEED_PAGE, self.shard)
        return self.page(conn, self._policy, channel, rows) if rows else None

    def page(self, conn: sqlite3.Connection, policy: Policy, channel: str, rows: list[sqlite3.Row]) -> Page:
        user_ids = [r["user_id"] for r in rows if r["user_id"]]
        # Without push tokens and endpoints: the address is in the row, the secrets come just below.
        users = directory.get_users(conn, user_ids, contacts=False)
        secrets = endpoints.credentials(conn, user_ids, self.clock()) if channel == "webhook" else {}
        # The page's suppressions and preferences in a few queries; each dispatch-time decision
        # re-reads only the directory's change counter (see Policy.view).
        view = policy.view(channel, [r["address"] for r in rows if r["address"]], list(users))
        return Page(rows, users, secrets, view)

    async def enqueue(self, lane: Lane, page: Page) -> None:
        """A page's pending rows into the lane's queue (or a retry timer), with their users and endpoints."""
        users, secrets, view = page.users, page.endpoints, page.view
        now = time.time()
        for row in page.rows:
            if self.stopping.is_set():
                return
            item = Queued(
                row,
                users.get(row["user_id"]) if row["user_id"] else None,
                row["attempts"],
                self.priority(row["category"]),
                secrets.get(row["user_id"], ([], None)),
                view,
            )
            lane.outstanding += 1
            due = row["next_attempt_at"]
            if due and due > now:
                self.later(lane, item, due - now)
            else:
                await lane.queue.put(item, item.priority)

    def later(self, lane: Lane, item: Queued, delay_s: float) -> None:
        """Queue `item` again after `delay_s` (a retry's backoff)."""

        async def later() -> None:
            await asyncio.sleep(delay_s)
            if not self.stopping.is_set():
                await lane.queue.put(item, item.priority)

        task = asyncio.create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
