"""Per-endpoint backpressure: one receiver's Retry-After holds back that receiver only.

A webhook endpoint that answers 429 or 503 with Retry-After is one receiver among thousands behind
the same provider account: slowing the account's token bucket would slow everyone. So such an
answer (a TransientError naming its `endpoint`) holds that endpoint's deliveries until the
Retry-After has passed, without an attempt and without taking tokens, while the account keeps its
rate for the others. A provider-wide throttle (Twilio's or SES's 429, no endpoint) still slows the
account's bucket. The holds live in each sending process (a sender process, a Redis worker): each
learns a held endpoint from its own first 429, at most one request more per process and window.
"""

from __future__ import annotations

import time


class EndpointHolds:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self._until)

    def hold(self, endpoint: str, seconds: float) -> None:
        """Hold back `endpoint`'s deliveries for `seconds` (a longer hold already there stays)."""
        until = time.monotonic() + seconds
        if until > self._until.get(endpoint, 0.0):
            self._until[endpoint] = until

    def remaining(self, endpoint: str) -> float:
        """Seconds until `endpoint` may be sent to again (0.0: now)."""
        until = self._until.get(endpoint)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self._until[endpoint]
            return 0.0
        return left
