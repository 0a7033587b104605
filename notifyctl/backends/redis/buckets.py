"""A token bucket per provider account shared by every worker: GCRA in one atomic Lua script.

GCRA keeps one number per account, the theoretical arrival time (TAT) of the next message, on
Redis's own clock (so workers' clocks do not matter). A request conforms when the new TAT stays
within `burst` emission intervals of now; any window of w seconds then holds at most
`burst + rate * w` messages, however many workers ask. A 429 pauses the account for everyone and
halves its rate for a while (each message costs two intervals).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from typing import Any

import redis.asyncio as aioredis

from notifyctl.backends.redis.connection import Outage, retrying
from notifyctl.backends.redis.streams import Keys

log = logging.getLogger("notifyctl.redis.buckets")

# KEYS: tat, pause, slow, per-second counter prefix, conf. ARGV: interval (µs), burst, rate, wanted.
# Takes up to `wanted` tokens that conform now; returns {taken, µs to wait before asking again}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {0, math.ceil(paused - now)} end
local base = tonumber(ARGV[1])
local interval = base
if redis.call('EXISTS', KEYS[3]) == 1 then interval = interval * 2 end
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local room = math.floor((now + burst * base - tat) / interval)
if room <= 0 then return {0, math.ceil(tat + interval - burst * base - now)} end
local taken = math.min(room, tonumber(ARGV[4]))
local new_tat = tat + taken * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local second = KEYS[4] .. t[1]
redis.call('INCRBY', second, taken)
redis.call('EXPIRE', second, 120)
redis.call('HSET', KEYS[5], 'rate', ARGV[3], 'burst', ARGV[2])
return {taken, 0}
"""

# KEYS: pause, slow. ARGV: pause for (µs, 0 = none), slow for (ms, 0 = none).
_SLOW_DOWN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause_us = tonumber(ARGV[1])
if pause_us > 0 then
  local until_us = now + pause_us
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  if until_us > current then
    redis.call('SET', KEYS[1], string.format('%.0f', until_us), 'PX', math.ceil(pause_us / 1000) + 1000)
  end
end
local slow_ms = tonumber(ARGV[2])
if slow_ms > 0 then
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl < slow_ms then redis.call('SET', KEYS[2], '1', 'PX', slow_ms) end
end
return 0
"""


def second_counter_prefix(keys: Keys, provider: str) -> str:
    return f"{keys.rate(provider)}:n:"


class RedisTokenBucket:
    """pipeline.backend.Bucket, shared through Redis by every process using `provider`. The tokens
    this process's deliveries wait for are asked for together, one script call per round."""

    def __init__(
        self,
        client: aioredis.Redis,
        provider: str,
        rate: float,
        burst: float,
        keys: Keys | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.client = client
        self.provider = provider
        self.rate = rate
        self.burst = max(1.0, burst)
        self.keys = keys or Keys()
        self.outage = outage or Outage(log, f"bucket {provider}")
        base = self.keys.rate(provider)
        counter = second_counter_prefix(self.keys, provider)
        self._acquire_keys = [base, f"{base}:pause", f"{base}:slow", counter, f"{base}:conf"]
        self._acquire = client.register_script(_ACQUIRE)
        self._slow_down = client.register_script(_SLOW_DOWN)
        self._interval_us = 1_000_000 / rate
        self._background: set[asyncio.Task[None]] = set()
        self._waiting: deque[list[Any]] = deque()  # [tokens still wanted, future]
        self._fetcher: asyncio.Task[None] | None = None

    async def acquire(self, n: int = 1) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append([n, future])
        if self._fetcher is None or self._fetcher.done():
            self._fetcher = asyncio.create_task(self._fetch())
        try:
            await future
        except asyncio.CancelledError:
            for waiting in self._waiting:
                if waiting[1] is future:
                    waiting[0] = 0  # nobody wants them any more
            raise

    async def _fetch(self) -> None:
        """Take tokens for every waiter, oldest first, until none waits."""
        while self._waiting:
            wanted = sum(int(w[0]) for w in self._waiting)
            if wanted <= 0:
                self._release_done()
                continue
            taken, wait_us = await retrying(functools.partial(self._take, wanted), self.outage)
            while taken > 0 and self._waiting:
                first = self._waiting[0]
                given = min(taken, int(first[0]))
                first[0] -= given
                taken -= given
                self._release_done()
            if wait_us > 0:
                await asyncio.sleep(wait_us / 1_000_000)

    def _release_done(self) -> None:
        while self._waiting and int(self._waiting[0][0]) <= 0:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)

    async def _take(self, wanted: int) -> tuple[int, int]:
        answer = await self._acquire(keys=self._acquire_keys, args=[self._interval_us, self.burst, self.rate, wanted])
        return int(answer[0]), int(answer[1])

    async def pace(self, n: int = 1) -> None:
        """Nothing more to do: the shared bucket counts whole seconds in Redis at the token."""
        return None

    def slow_down(self, retry_after_s: float | None, for_s: float) -> None:
        # The protocol's slow_down is synchronous (the embedded bucket needs no I/O); the shared one
        # is written in the background, and the next acquire anywhere sees it.
        task = asyncio.get_running_loop().create_task(self.slow_down_now(retry_after_s, for_s))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def slow_down_now(self, retry_after_s: float | None, for_s: float) -> None:
        base = self.keys.rate(self.provider)
        pause_us = int((retry_after_s or 0) * 1_000_000)
        await self._slow_down(keys=[f"{base}:pause", f"{base}:slow"], args=[pause_us, int(for_s * 1000)])


async def recent_rate(client: aioredis.Redis, provider: str, keys: Keys | None = None, seconds: int = 5) -> float:
    """Tokens taken per second over the last `seconds` whole seconds (Redis's clock)."""
    keys = keys or Keys()
    now_s, _ = await client.time()
    prefix = second_counter_prefix(keys, provider)
    values = await client.mget([f"{prefix}{now_s - i}" for i in range(1, seconds + 1)])
    return sum(int(v) for v in values if v) / seconds
