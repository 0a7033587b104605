"""Per-provider token buckets (aiolimiter) that a 429 can slow down for a while.

`Limiter` is the interface the dispatcher uses; the embedded `TokenBucket` lives in this
process, a Redis-backed one (shared by every worker) implements the same two methods.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from aiolimiter import AsyncLimiter


class Limiter(Protocol):
    async def acquire(self) -> None:
        """Wait for one token."""

    def slow_down(self, retry_after_s: float | None, for_s: float) -> None:
        """The provider said 429: pause until retry_after_s and halve the rate for `for_s`."""


class TokenBucket:
    """`rate` tokens per second with room for `burst`; aiolimiter's leaky bucket underneath.

    The bucket starts empty: the burst is room saved up while sending below the rate, not a
    free extra at start-up. (A full bucket at start lets R + burst requests leave in the first
    second; arriving late behind new connections' set-up, they bunch with the next second's and
    the receiver sees more than R + burst in one second.)"""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._bucket = AsyncLimiter(self.burst, self.burst / rate)
        self._started = False
        self._paused_until = 0.0
        self._slow_until = 0.0

    async def acquire(self) -> None:
        if not self._started:
            self._started = True
            await self._bucket.acquire(self.burst)  # at once: it only fills the empty bucket's room
        while (wait := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        await self._bucket.acquire()
        if time.monotonic() < self._slow_until:
            # A second token per message halves the throughput while the provider recovers.
            await self._bucket.acquire()

    def slow_down(self, retry_after_s: float | None, for_s: float) -> None:
        now = time.monotonic()
        if retry_after_s:
            self._paused_until = max(self._paused_until, now + retry_after_s)
        self._slow_until = max(self._slow_until, now + for_s)
