"""An unknown outcome on every path: a receiver that takes a webhook and then answers too late. The
delivery is in doubt, re-sent with the same webhook-id (the receiver dedupes), and duplicates are
found only among in-doubt rows."""

from __future__ import annotations

from tests.contract.checks import every_delivery_once
from tests.contract.conftest import Setup
from tests.webhook_sink import ReceivedRequest, respond, stall

LATE_S = 3.0  # past the world's webhook timeout_s (2)


def test_a_webhook_taken_then_answered_too_late_is_in_doubt_and_resent(contract: Setup) -> None:
    n = 60
    world, path = contract(n)
    stalling = {"u3", "u17", "u42"}
    for user in stalling:
        world.sink.on_path(f"/{user}", stall(LATE_S))

    def answer_the_resend(request: ReceivedRequest, count: int) -> None:
        if request.path.lstrip("/") in stalling:
            world.sink.on_path(request.path, respond(200))  # only the first request is answered late

    world.sink.on_request(answer_the_resend)
    result = path.run()
    world.sink.on_request(None)

    assert result.code == 0, result.err[-3000:]  # re-sent in the run: nothing held
    rows = every_delivery_once(world, n)  # and more than once only where the row is in doubt
    assert {row["state"] for row in rows.values()} == {"sent"}
    assert {user for user, row in rows.items() if row["in_doubt"]} == stalling
    hits = world.webhook_hits()
    assert {user: hits[user] for user in stalling} == dict.fromkeys(stalling, 2)
