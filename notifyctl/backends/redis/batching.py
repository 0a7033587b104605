"""Calls made in the same turn of the event loop, sent to Redis as one.

A worker runs many deliveries at once, each asking for its claim and reporting its outcome on its
own; a coordinator publishes from many dispatchers. Each `submit` waits for the next flush, which
takes everything submitted meanwhile in one Lua call or pipeline: one round trip per batch instead
of one per message, with the per-delivery code unchanged (the ledger does the same for SQLite).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[In, Out]):
    def __init__(
        self, flush: Callable[[list[In]], Awaitable[list[Out]]], max_batch: int = 500, linger_s: float = 0.0
    ) -> None:
        """`flush(items)` answers one result per item, in order; if it raises, every caller of that
        batch hears the exception. `linger_s`: how long the first item of a batch waits for others
        (0: only the callers of the same turn of the loop)."""
        self._flush = flush
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(self._linger_s)  # the other callers of this turn (or of the next moment) add theirs
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
