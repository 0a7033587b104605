"""One endpoint's backpressure is that endpoint's: a webhook receiver answering 429 with Retry-After
holds back its own deliveries until then, while everyone else's keep their rate. On every path.

Eight users' endpoints live on a second receiver (another port: another endpoint) whose first answer
is 429 with Retry-After: 2. The others' receiver answers at once.
"""

from __future__ import annotations

from collections import Counter

from tests.contract.conftest import Setup
from tests.webhook_sink import SINK_SECRET, WebhookSink, respond

N = 300
RATE = 100.0
RETRY_AFTER_S = 2.0


def test_a_429_from_one_endpoint_holds_back_that_endpoint_only(contract: Setup) -> None:
    world, path = contract(N, rate=RATE, burst=5)
    with WebhookSink() as throttled:
        moved = [f"u{i}" for i in range(20, 28)]
        rows = ["user_id,webhook_url,webhook_secret"] + [f"{u},{throttled.url(f'/{u}')},{SINK_SECRET}" for u in moved]
        world.ws.write("moved.csv", "\n".join(rows) + "\n")
        assert world.ws.cli("users", "import", "moved.csv").exit_code == 0
        throttled.script(respond(429, {"Retry-After": f"{RETRY_AFTER_S:g}"}))
        finished = path.run()
        assert finished.code == 0, finished.err[-3000:]
        at_throttled = throttled.requests
    first = at_throttled[0]
    again = [r for r in at_throttled[1:] if r.webhook_id == first.webhook_id]
    assert again, "the throttled delivery was never sent again"
    # Its endpoint asked for two seconds: nothing went there sooner from the process that was told.
    assert again[0].received_monotonic - first.received_monotonic >= RETRY_AFTER_S - 0.05
    # Meanwhile the others kept their rate: the provider account was not paused nor halved.
    window = [
        r
        for r in world.sink.requests
        if first.received_monotonic < r.received_monotonic < first.received_monotonic + RETRY_AFTER_S * 0.75
    ]
    assert len(window) >= RATE * RETRY_AFTER_S * 0.75 * 0.5, f"only {len(window)} others were sent meanwhile"
    rows = world.rows()
    assert set(rows) == {f"u{i}" for i in range(1, N + 1)} and {r["state"] for r in rows.values()} == {"sent"}
    hits = Counter(r.path.lstrip("/") for r in [*world.sink.requests, *at_throttled])
    assert set(hits) == set(rows)
    twice = {user for user, n in hits.items() if n > 1}
    assert twice == {first.path.lstrip("/")}  # the 429, then once more; nobody else twice
    assert rows[first.path.lstrip("/")]["in_doubt"] == 0  # a clear answer: not sent, not in doubt
    assert world.integrity() == "ok"
