"""Per-provider token buckets (aiolimiter) that a 429 can slow down for a while.

`Limiter` is the interface the dispatcher uses; the embedded `TokenBucket` lives in this
process, a Redis-backed one (shared by every worker) implements the same two methods.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol

from aiolimiter import AsyncLimiter


class Limiter(Protocol):
    async def acquire(self) -> None:
        """Wait for one token."""

    async def pace(self, n: int = 1) -> None:
        """Right before a provider call of `n` messages whose tokens were taken: wait if the calls
        of the last second are already at the limit (a no-op where the limiter cannot know)."""

    def slow_down(self, retry_after_s: float | None, for_s: float) -> None:
        """The provider said 429: pause until retry_after_s and halve the rate for `for_s`."""


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
