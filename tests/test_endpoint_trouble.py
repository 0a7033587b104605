"""A webhook endpoint's trouble is that endpoint's: a receiver that refuses connections, or takes
the request and never answers, trips no circuit breaker of the webhook provider (which would hold
back, or reroute, every other endpoint's deliveries); and a delivery of unknown outcome that is
re-sent (the receiver dedupes) waits a backoff first, as a retry does, instead of hitting a stalling
receiver again at once. Through the real webhook provider and the Sender, against a real sink.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from notifyctl.backends.local import TokenBucket
from notifyctl.pipeline.backend import Dispatch, Verdict
from notifyctl.pipeline.outcomes import Kind, Outcome
from notifyctl.pipeline.router import CircuitBreaker
from notifyctl.pipeline.sender import Sender
from notifyctl.settings import BreakerSettings, RetrySettings
from tests.provider_fixtures import OpenProvider, sink_envelope, webhook_settings
from tests.unreachable import closed_port
from tests.webhook_sink import WebhookSink, stall

pytest_plugins = ("tests.provider_fixtures",)

TIMEOUT_S = 0.3


class Outcomes:
    """The Sender's Claims and OutcomeSink, kept in a list."""

    def __init__(self) -> None:
        self.recorded: list[Outcome] = []

    async def claim(self, dispatches: Sequence[Dispatch]) -> list[Verdict]:
        return [None for _ in dispatches]

    def record(self, outcome: Outcome) -> None:
        self.recorded.append(outcome)


async def test_refusing_and_stalling_endpoints_trip_no_breaker_and_resends_back_off(
    open_provider: OpenProvider, webhook_sink: WebhookSink
) -> None:
    provider = await open_provider("webhook", "hooks", webhook_settings() | {"timeout_s": TIMEOUT_S})
    breaker = CircuitBreaker(BreakerSettings(consecutive_failures=2, cooldown_s=60))
    ledger = Outcomes()
    retry = RetrySettings(base_s=5.0, cap_s=5.0, max_attempts=3)
    sender = Sender(
        {"hooks": provider},
        {"hooks": TokenBucket(1000, 1000)},
        {"hooks": breaker},
        {"hooks": 1},
        retry,
        ledger,
        ledger,
        lambda: False,
        lambda name: True,  # webhook receivers dedupe (the same webhook-id): unknown outcomes are re-sent
    )
    webhook_sink.on_path("/stalls", stall(TIMEOUT_S + 2))
    refused = f"http://127.0.0.1:{closed_port()}/hook"

    for i in range(1, 4):  # one after another: more than twice the breaker's threshold
        await sender.transmit(sink_envelope(refused, i), "hooks", 1)
        await sender.transmit(sink_envelope(webhook_sink.url("/stalls"), 10 + i), "hooks", 1)

    assert breaker.state == "closed"  # other endpoints' deliveries go on, on this provider
    not_sent = [o for o in ledger.recorded if o.delivery_id < 10]
    unknown = [o for o in ledger.recorded if o.delivery_id > 10]
    assert [o.kind for o in not_sent] == [Kind.not_sent] * 3 and all(o.retry_at for o in not_sent)
    assert [o.kind for o in unknown] == [Kind.unknown] * 3
    assert all(o.resend and o.code == "timeout_after_send" for o in unknown)
    # Re-sent after a backoff, as a retry is: due later than now (uniform in [0, base_s]), never
    # unset, which would put the delivery straight back to the stalling receiver.
    now = time.time()
    assert all(o.retry_at is not None and o.retry_at <= now + retry.base_s for o in unknown)
