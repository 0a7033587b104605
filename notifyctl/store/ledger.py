"""Group commit: state changes from many workers, written in few transactions, in order.

Workers hand the ledger their changes; they run inside the next batch transaction on the
ledger's own connection, in a dedicated thread so the event loop keeps moving messages while
SQLite writes. An intent (`intent`, `submit`) is awaited: it returns only after the COMMIT, which
is what keeps the outbox promise (intent committed before the provider call) at high rates. An
intent returns the directory's change counter read in the same transaction, so that the engine
can tell whether the policy answers it sent on are still those of the directory (Policy.view).
Outcomes (`sent`, `post`) are queued for the next batch without waiting.

The two changes every delivery makes — its intent and its success — are typed records applied
with one `executemany` per statement for the whole batch, in delivery order; anything else is an
op (a function of the connection) run in submission order. Within a batch the ops and successes
run before the intents. That order is safe because a delivery's intent and the outcome of the
same attempt are never in one batch (the outcome is only known after the intent's commit), while
an outcome and the next attempt's intent may be, and then the outcome must come first.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from notifyctl.store import endpoints, outbox
from notifyctl.store.db import BUSY_WRITER_AUTOCHECKPOINT, WriteLock, connect, iso
from notifyctl.store.directory import directory_version

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

OP, INTENT, SENT = 0, 1, 2
# (kind, op or record, future or None): a record is (delivery_id, attempt, provider) for an intent,
# (delivery_id, attempt, provider, provider_message_id, latency_ms, endpoint user or None) for a success.
Entry = tuple[int, Any, "asyncio.Future[Any] | None"]


def _as_op(kind: int, payload: Any) -> Op:
    """A typed record as a plain op (for the one-by-one path after a failed batch)."""
    if kind == OP:
        return payload  # type: ignore[no-any-return]
    if kind == INTENT:

        def intent(conn: sqlite3.Connection) -> int | None:
            claimed = outbox.mark_inflight_many(conn, [payload], iso(), claim=True)
            return directory_version(conn) if claimed else None

        return intent
    delivery_id, attempt, provider, message_id, latency_ms, endpoint_user = payload

    def sent(conn: sqlite3.Connection) -> None:
        outbox.mark_sent(conn, delivery_id, attempt, provider, message_id, latency_ms)
        if endpoint_user:
            endpoints.record_success(conn, endpoint_user)

    return sent


class Ledger:
    """One writer connection, one thread, batches of changes committed together."""

    def __init__(self, db_path: Path, max_batch: int = 2000) -> None:
        self._db_path = db_path
        self._max_batch = max_batch
        self._pending: list[Entry] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifyctl-ledger")
        self._conn: sqlite3.Connection | None = None
        self._write_lock = WriteLock(db_path)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failures: list[BaseException] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(
            self._executor, lambda: connect(self._db_path, autocheckpoint=BUSY_WRITER_AUTOCHECKPOINT)
        )
        self._task = asyncio.create_task(self._run(), name="ledger")

    def _add(self, kind: int, payload: Any, wait: bool) -> asyncio.Future[Any] | None:
        if self._closing:
            raise RuntimeError("ledger is closed")
        future = asyncio.get_running_loop().create_future() if wait else None
        self._pending.append((kind, payload, future))
        self._wake.set()
        return future

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op(conn)` in the next batch; returns its result once the batch is committed."""
        future = self._add(OP, op, wait=True)
        assert future is not None
        return await future  # type: ignore[no-any-return]

    def post(self, op: Callable[[sqlite3.Connection], Any]) -> None:
        """Run `op(conn)` in the next batch without waiting for the commit (outcomes: a crash before
        the commit leaves the row in flight, which resume treats as in doubt). Failures are kept in
        `self.failures`."""
        self._add(OP, op, wait=False)

    async def intent(self, delivery_id: int, attempt: int, provider: str) -> int | None:
        """The delivery is in flight on `provider` (attempt counts from 1); returns after the commit,
        with the directory's change counter as of that commit (see Policy.view). None: the row was
        no longer pending after attempt - 1 attempts (another sender process took it); not claimed."""
        future = self._add(INTENT, (delivery_id, attempt, provider), wait=True)
        assert future is not None
        return await future  # type: ignore[no-any-return]

    def sent(
        self,
        delivery_id: int,
        attempt: int,
        provider: str,
        provider_message_id: str | None,
        latency_ms: float,
        endpoint_user: str | None = None,
    ) -> None:
        """The attempt succeeded (not awaited, like `post`); `endpoint_user`: a webhook endpoint that
        answered 2xx, whose failure clock starts again."""
        self._add(SENT, (delivery_id, attempt, provider, provider_message_id, latency_ms, endpoint_user), wait=False)

    async def stop(self) -> None:
        """Commit what was submitted, then close."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)
        self._write_lock.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._commit, batch)
                except BaseException as exc:  # the whole batch failed (disk full, …): every caller hears it
                    error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
                    for _, _, future in batch:
                        if future is None:
                            self.failures.append(error)
                        elif not future.done():
                            future.set_exception(error)
                    continue
                for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future is None:
                        if not ok:
                            self.failures.append(value)
                    elif not future.done():
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(value)
            if self._closing and not self._pending:
                return

    def _commit(self, batch: list[Entry]) -> list[tuple[bool, Any]]:
        with self._write_lock.held():
            return self._commit_batch(batch)

    def _commit_batch(self, batch: list[Entry]) -> list[tuple[bool, Any]]:
        """All changes in one transaction; if one fails, the batch is redone with a savepoint per
        change so that a single bad one (a constraint, a bug) does not take its neighbours with it."""
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes: list[tuple[bool, Any]] = [(True, op(conn) if kind == OP else None) for kind, op, _ in batch]
            now = iso()
            sent = [record for kind, record, _ in batch if kind == SENT]
            if sent:
                outbox.mark_sent_many(conn, [record[:5] for record in sent], now)
                endpoints.record_successes(conn, [record[5] for record in sent if record[5]])
            intents = [record for kind, record, _ in batch if kind == INTENT]
            if intents:
                claimed = outbox.mark_inflight_many(conn, intents, now, claim=True)
                # Read under the write lock: no opt-out can commit between this read and the intents.
                version = directory_version(conn)
                for i, (kind, record, _) in enumerate(batch):
                    if kind == INTENT:  # None: not claimed (a row has one claim per batch at most)
                        outcomes[i] = (True, version if record[0] in claimed else None)
                        claimed.discard(record[0])
            conn.execute("COMMIT")
            return outcomes
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return self._commit_one_by_one(conn, [_as_op(kind, payload) for kind, payload, _ in batch])

    @staticmethod
    def _commit_one_by_one(conn: sqlite3.Connection, ops: list[Op]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((True, op(conn)))
                    conn.execute("RELEASE op")
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((False, exc))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes
