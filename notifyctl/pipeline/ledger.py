"""Group commit: state changes from many workers, written in few transactions, in order.

Workers `await ledger.submit(op)`; the op (a function of the connection) runs inside the next
batch transaction on the ledger's own connection, in a dedicated thread so the event loop keeps
moving messages while SQLite writes. `submit` returns only after the COMMIT, which is what keeps
the outbox promise (intent committed before the provider call, outcome after) at high rates.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from notifyctl.store.db import connect

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


class Ledger:
    """One writer connection, one thread, batches of ops committed together."""

    def __init__(self, db_path: Path, max_batch: int = 2000) -> None:
        self._db_path = db_path
        self._max_batch = max_batch
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifyctl-ledger")
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failures: list[BaseException] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect, self._db_path)
        self._task = asyncio.create_task(self._run(), name="ledger")

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op(conn)` in the next batch; returns its result once the batch is committed."""
        if self._closing:
            raise RuntimeError("ledger is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wake.set()
        return await future

    def post(self, op: Callable[[sqlite3.Connection], Any]) -> None:
        """Run `op(conn)` in the next batch without waiting for the commit (outcomes: a crash before
        the commit leaves the row in flight, which resume treats as in doubt). Failures are kept in
        `self.failures`."""
        if self._closing:
            raise RuntimeError("ledger is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(self._keep_failure)
        self._pending.append((op, future))
        self._wake.set()

    def _keep_failure(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.failures.append(future.exception())  # type: ignore[arg-type]

    async def stop(self) -> None:
        """Commit what was submitted, then close."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._commit, [op for op, _ in batch])
                except BaseException as exc:  # the whole batch failed (disk full, …): every caller hears it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                    continue
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
            if self._closing and not self._pending:
                return

    def _commit(self, ops: list[Op]) -> list[tuple[bool, Any]]:
        """All ops in one transaction; if one fails, the batch is redone with a savepoint per op so
        that a single bad op (a constraint, a bug) does not take its neighbours with it."""
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes: list[tuple[bool, Any]] = [(True, op(conn)) for op in ops]
            conn.execute("COMMIT")
            return outcomes
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return self._commit_one_by_one(conn, ops)

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
