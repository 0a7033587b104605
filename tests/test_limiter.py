"""The embedded token bucket: the rate holds from the first request (no free burst at start-up)."""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from notifyctl.pipeline.limiter import TokenBucket


async def test_the_bucket_starts_empty() -> None:
    # A plain leaky bucket starts with its whole burst available ...
    plain = AsyncLimiter(5, 1.0)
    await plain.acquire()
    assert plain.has_capacity(4)
    # ... ours does not: after the first token, the next one has to be earned at the rate.
    bucket = TokenBucket(rate=5, burst=5)
    await bucket.acquire()
    assert not bucket._bucket.has_capacity(1)


async def test_a_slowed_bucket_still_starts_empty() -> None:
    bucket = TokenBucket(rate=5, burst=5)
    bucket.slow_down(None, for_s=60)  # a 429 before the first send: two tokens per message
    await bucket.acquire()
    assert not bucket._bucket.has_capacity(1)
