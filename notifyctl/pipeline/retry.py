"""When to try again: full-jitter exponential backoff with Retry-After as a floor."""

from __future__ import annotations

import random

from notifyctl.settings import RetrySettings


def backoff_s(
    attempt: int, settings: RetrySettings, retry_after_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Delay before attempt `attempt + 1` (attempt counts from 1).

    sleep = uniform(0, min(cap, base * 2**(attempt-1))); a provider's Retry-After (capped) is a floor.
    """
    draw = (rng or random).uniform(0.0, min(settings.cap_s, settings.base_s * 2 ** max(0, attempt - 1)))
    if retry_after_s is not None:
        return max(draw, min(retry_after_s, settings.retry_after_cap_s))
    return draw


def should_retry(attempt: int, settings: RetrySettings) -> bool:
    return attempt < settings.max_attempts
