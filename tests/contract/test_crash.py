"""kill -9 of the sending processes, then what an operator does next: nothing lost, duplicates only
among in-doubt rows, the database intact. On every path."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from tests.contract.checks import every_delivery_once
from tests.contract.conftest import Setup
from tests.webhook_sink import ReceivedRequest

pytestmark = pytest.mark.slow
N = 300


@pytest.mark.parametrize("at", [40, 1], ids=["mid-run", "first-message"])
def test_killed_after_the_receiver_accepted_and_before_the_outcome_was_recorded(contract: Setup, at: int) -> None:
    """The fixed point: the receiver has the message (it recorded it), the sender never heard back."""
    world, path = contract(N)
    killed: list[ReceivedRequest] = []

    def kill_at(request: ReceivedRequest, count: int) -> None:
        if count == at:
            path.signal_kill()  # before this request is answered: its outcome can never be recorded
            killed.append(request)

    world.sink.on_request(kill_at)
    path.start()
    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert killed, "the sink never saw the request to kill at"
    path.kill()
    world.sink.on_request(None)

    resumed = path.resume()
    assert resumed.code == 0, resumed.err[-3000:]
    rows = every_delivery_once(world, N)
    assert {row["state"] for row in rows.values()} == {"sent"}  # webhooks dedupe: in-doubt ones re-sent
    victim = killed[0].path.lstrip("/")
    assert rows[victim]["in_doubt"] == 1, "the delivery killed mid-call must be in doubt"
    assert world.webhook_hits()[victim] == 2  # the one the receiver had, and its re-send (same webhook-id)


@pytest.mark.parametrize("draw", [0, 1])
def test_killed_at_a_random_point(contract: Setup, draw: int) -> None:
    seed = int(os.environ.get("CONTRACT_KILL_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)
    print(f"random kill point: CONTRACT_KILL_SEED={seed}")  # shown when the test fails, to replay it
    rng = random.Random(seed + draw)
    world, path = contract(N)
    after, delay_s = rng.randrange(1, N // 2), rng.uniform(0.0, 0.2)
    fired = threading.Event()

    def kill_later(_: ReceivedRequest, count: int) -> None:
        if count == after:
            threading.Timer(delay_s, path.signal_kill).start()
            fired.set()

    world.sink.on_request(kill_later)
    path.start()
    fired.wait(60)
    time.sleep(delay_s + 0.05)
    path.kill()
    world.sink.on_request(None)

    resumed = path.resume()
    assert resumed.code == 0, resumed.err[-3000:]
    rows = every_delivery_once(world, N)
    assert {row["state"] for row in rows.values()} == {"sent"}
