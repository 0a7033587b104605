"""Surviving a Redis restart: every loop that talks to Redis retries with backoff, and says so.

A worker, a coordinator or `serve --redis` that loses Redis keeps running: each call is retried
with full-jitter backoff (capped), the outage is logged once when it starts and once when it ends,
and `Outage` tells status readers (health, `cluster status` through the heartbeats) since when.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ConnectionError, OSError)
BASE_S = 0.05
CAP_S = 2.0


class Outage:
    """Since when Redis has been unreachable for one process (None: reachable)."""

    def __init__(self, log: logging.Logger, where: str) -> None:
        self.log = log
        self.where = where
        self.since: float | None = None
        self.recovered = asyncio.Event()  # set on each recovery (a reconnect after an outage)

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(
                "redis unreachable; retrying with backoff", extra={"where": self.where, "error": str(exc)[:200]}
            )

    def succeeded(self) -> bool:
        """Mark a success; True when it ends an outage."""
        if self.since is None:
            return False
        lasted = time.monotonic() - self.since
        self.since = None
        self.log.warning("redis reachable again", extra={"where": self.where, "outage_s": round(lasted, 2)})
        self.recovered.set()
        return True


async def retrying(call: Callable[[], Awaitable[T]], outage: Outage, stopping: asyncio.Event | None = None) -> T:
    """`call()` until it succeeds, retried while Redis is unreachable: only another error, the
    caller's cancellation, or `stopping` set during an outage (the last error is raised) ends it."""
    attempt = 0
    while True:
        try:
            result = await call()
        except UNREACHABLE as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py turns a cancellation during a read into a ConnectionError: the task was
                # told to stop, and must not retry as if the connection had failed.
                raise asyncio.CancelledError from exc
            outage.failed(exc)
            if stopping is not None and stopping.is_set():
                raise
            attempt += 1
            await asyncio.sleep(random.uniform(0, min(CAP_S, BASE_S * 2**attempt)))
            continue
        outage.succeeded()
        return result
