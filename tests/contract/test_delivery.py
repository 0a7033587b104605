"""Rate, idempotency, dead letters and quiet hours: the same promises on every path."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.contract.checks import every_delivery_once
from tests.contract.conftest import Setup
from tests.webhook_sink import respond


def busiest_second(times: list[float]) -> int:
    """The most requests in any one-second window (sliding, over the arrival times)."""
    ordered = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_rate_and_burst_hold_at_the_receiver_and_nothing_goes_twice_across_runs(contract: Setup) -> None:
    n, rate, burst = 120, 40.0, 4
    world, path = contract(n, rate=rate, burst=burst)
    first = path.run()
    assert first.code == 0, first.err[-3000:]
    every_delivery_once(world, n)
    arrivals = [r.received_monotonic for r in world.sink.requests]
    assert len(arrivals) == n
    assert busiest_second(arrivals) <= rate + burst  # the token bucket, counted where the provider sees it

    again = path.run()  # the same campaign (the same logical event) again: nothing new goes out
    assert again.code == 0, again.err[-3000:]
    assert len(world.sink.requests) == n
    with world.db() as conn:
        second = conn.execute(
            "SELECT state, reason, count(*) FROM deliveries WHERE run_id != (SELECT run_id FROM deliveries "
            "ORDER BY id LIMIT 1) GROUP BY 1, 2"
        ).fetchall()
    # Recorded as duplicates (the API answers with the original deliveries and records nothing new).
    assert [tuple(row) for row in second] in ([("skipped", "duplicate", n)], [])


def test_dead_letters_redriven_keep_their_identity(contract: Setup) -> None:
    n = 20
    world, path = contract(n)
    for i in range(1, 6):
        world.sink.on_path(f"/u{i}", respond(400))  # refused: never retried, dead letters
    first = path.run()
    assert first.code == 1, first.err[-3000:]  # some failed: cron can act on it
    rows = world.rows()
    assert {u for u, r in rows.items() if r["state"] == "dead"} == {f"u{i}" for i in range(1, 6)}
    run_id = next(iter(rows.values()))["run_id"]
    for i in range(1, 6):
        world.sink.on_path(f"/u{i}", respond(200))
    redriven = path.redrive(run_id)
    assert redriven.code == 0, redriven.err[-3000:]
    hits = world.webhook_hits()
    ids: dict[str, set[str | None]] = {}
    for request in world.sink.requests:
        ids.setdefault(request.path.lstrip("/"), set()).add(request.webhook_id)
    for i in range(1, n + 1):
        user = f"u{i}"
        assert hits[user] == (2 if i <= 5 else 1), user
        assert len(ids[user]) == 1, user  # a redrive re-sends with the same webhook-id
    with world.db() as conn:
        again = conn.execute(
            "SELECT state, count(*) FROM deliveries WHERE redrive_of IS NOT NULL GROUP BY 1"
        ).fetchall()
    assert [tuple(row) for row in again] == [("sent", 5)]


def test_quiet_hours_defer_and_the_window_releases_them(contract: Setup) -> None:
    n = 10
    world, path = contract(n, quiet_webhook=True, quiet=("00:00:00", "00:00:00"))
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute == 59 and now.second > 45:
        time.sleep(20)  # a window that crosses midnight is fine; one that closes after it ends is not this test
        now = datetime.now(UTC)
    opens = now + timedelta(seconds=8)  # a loaded machine takes seconds to start a coordinator and workers
    world.quiet_hours((now - timedelta(hours=1)).strftime("%H:%M:%S"), opens.strftime("%H:%M:%S"))
    first = path.run()
    assert first.code == 0, first.err[-3000:]  # deferred is not failed
    assert {r["state"] for r in world.rows().values()} == {"deferred"}
    assert {r["reason"] for r in world.rows().values()} == {"quiet_hours"}
    assert world.sink.requests == []
    while datetime.now(UTC) < opens.replace(microsecond=0) + timedelta(seconds=1):
        time.sleep(0.1)
    released = path.resume(due=True)
    assert released.code == 0, released.err[-3000:]
    every_delivery_once(world, n)
    assert {r["state"] for r in world.rows().values()} == {"sent"}
    assert min(r.received_at for r in world.sink.requests) >= opens.replace(microsecond=0).timestamp()
