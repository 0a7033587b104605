"""The bulkhead queue between a lane's feeder and its workers.

Bounded (a slow provider holds up only its own channel, and memory stays flat) and ordered by
priority, so transactional and critical messages go ahead of queued marketing work. Stop signals
bypass the bound and jump the line, so that workers can always be told to finish.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Generic, TypeVar

PRIORITY = {"high": 0, "normal": 1, "low": 2}
_STOP_NOW = -1  # sorts before every real item: stop after the message in hand
_STOP_WHEN_EMPTY = 9  # sorts after every real item: stop when the lane has drained


T = TypeVar("T")


class LaneQueue(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.PriorityQueue[tuple[int, int, T | None]] = asyncio.PriorityQueue()
        self._room = asyncio.Semaphore(maxsize)
        self._order = itertools.count()
        self._closed = False
        self._maxsize = maxsize

    async def put(self, item: T, priority: int = 1) -> bool:
        """Queue an item, waiting for room; False (not queued) once the lane is stopping."""
        await self._room.acquire()
        if self._closed:
            self._room.release()  # wake the next blocked producer too
            return False
        self._queue.put_nowait((priority, next(self._order), item))
        return True

    def stop(self, workers: int, *, now: bool) -> None:
        """Tell `workers` consumers to finish: at once (after their current message) or once drained."""
        for _ in range(workers):
            self._queue.put_nowait((_STOP_NOW if now else _STOP_WHEN_EMPTY, next(self._order), None))
        if now and not self._closed:
            self._closed = True
            self._room.release()  # producers blocked on a full queue wake up and give up

    async def get(self) -> T | None:
        """The next item, or None: the consumer should stop."""
        _, _, item = await self._queue.get()
        if item is not None:
            self._room.release()
        return item

    def get_nowait(self) -> T | None:
        """The next item if one is queued now; a stop signal stays queued for its consumer."""
        try:
            entry = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if entry[2] is None:
            self._queue.put_nowait(entry)
            return None
        self._room.release()
        return entry[2]

    def qsize(self) -> int:
        return self._queue.qsize()
