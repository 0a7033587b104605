"""The bulkhead queue between a lane's feeder and its workers.

Bounded (a slow provider holds up only its own channel, and memory stays flat) and ordered by
priority, so transactional and critical messages go ahead of queued marketing work.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

PRIORITY = {"high": 0, "normal": 1, "low": 2}
_LAST = 9  # sentinels sort after every real item


class LaneQueue:
    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.PriorityQueue[tuple[int, int, dict[str, Any] | None]] = asyncio.PriorityQueue(maxsize)
        self._order = itertools.count()

    async def put(self, item: dict[str, Any], priority: int = 1) -> None:
        await self._queue.put((priority, next(self._order), item))

    def put_nowait(self, item: dict[str, Any] | None, priority: int = _LAST) -> None:
        self._queue.put_nowait((priority if item is not None else _LAST, next(self._order), item))

    async def get(self) -> dict[str, Any] | None:
        _, _, item = await self._queue.get()
        return item

    def get_nowait(self) -> dict[str, Any] | None:
        """The next item if one is queued now (a sentinel is put back for its worker)."""
        try:
            priority, order, item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if item is None:
            self._queue.put_nowait((priority, order, item))
        return item

    def qsize(self) -> int:
        return self._queue.qsize()
