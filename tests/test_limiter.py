"""The embedded token bucket: the rate holds from the first request (no free burst at start-up)."""

from __future__ import annotations

import asyncio

import pytest
from aiolimiter import AsyncLimiter

from notifyctl.backends.local import TokenBucket


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


async def test_pace_holds_a_call_while_a_second_already_has_rate_plus_burst() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    await bucket.pace(12)  # 12 calls (rate + burst) bunched together, e.g. behind a slow commit
    assert bucket._sent is not None and len(bucket._sent) == 12
    held = asyncio.ensure_future(bucket.pace())
    await asyncio.sleep(0.3)
    assert not held.done()  # the 13th waits for the first of them to leave the window
    held.cancel()


@pytest.mark.parametrize(("rate", "burst"), [(200, 20), (1000, 10), (10, 2), (5000, 1)])
def test_pace_never_holds_a_steady_stream_at_the_rate(rate: float, burst: float) -> None:
    """At exactly R a second the oldest of the last R + burst calls is (R + burst) / R seconds old:
    the guard must be shorter than that, or pace() alone would keep the rate under R."""
    bucket = TokenBucket(rate=rate, burst=burst)
    assert 0 < bucket.guard_s < bucket.burst / rate
    assert int(rate + bucket.burst) / rate > 1 + bucket.guard_s


async def test_pace_is_free_below_the_limit_and_off_for_very_high_rates() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    await asyncio.wait_for(bucket.pace(11), 5)  # would hang if it waited at all
    assert TokenBucket(rate=1_000_000, burst=100)._sent is None
