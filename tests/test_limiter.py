"""The embedded token bucket: the rate holds from the first request (no free burst at start-up)."""

from __future__ import annotations

import time

from notifyctl.pipeline.limiter import TokenBucket


async def test_the_bucket_starts_empty() -> None:
    bucket = TokenBucket(rate=50, burst=50)
    started = time.monotonic()
    for _ in range(10):
        await bucket.acquire()
    # A full bucket would hand out these 10 at once; an empty one needs ~10/50 s.
    assert time.monotonic() - started >= 0.15


async def test_room_saved_while_idle_is_a_burst() -> None:
    bucket = TokenBucket(rate=20, burst=5)
    await bucket.acquire()
    time.sleep(0.3)  # idle: the bucket drains its 5 tokens of room (20/s × 0.3 s > 5)
    started = time.monotonic()
    for _ in range(5):
        await bucket.acquire()
    assert time.monotonic() - started < 0.1  # the saved-up burst goes at once
