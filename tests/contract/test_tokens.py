"""Push token hygiene, the same on every path and for every push service (FCM, APNs): a token gone for
good is skipped and removed (routine churn does not fail a run), and a wrong configuration posing as
churn removes no token."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.contract.conftest import Setup
from tests.contract.paths import Api
from tests.contract.world import World, push_token

SERVICES = [pytest.param("fcm", id="fcm"), pytest.param("apns", id="apns")]
# What a wrong configuration of each service is said to most likely be.
LIKELY_CAUSE = {"fcm": "another Firebase project", "apns": "sandbox vs production"}


def devices(world: World) -> set[str]:
    with world.db() as conn:
        return {row[0] for row in conn.execute("SELECT token FROM devices")}


def tokens(world: World, users: range | tuple[int, ...]) -> set[str]:
    return {push_token(i, world.push_service) for i in users}


def unregister(world: World, users: tuple[int, ...]) -> None:
    """The apps of these users were uninstalled since their tokens were registered."""
    if world.push_service == "apns":
        assert world.apns is not None
        for i in users:
            world.apns.unregister(push_token(i, "apns"))
    else:
        assert world.fcm is not None
        world.fcm.unregister(*tokens(world, users))


def misconfigure(world: World) -> None:
    """Every token answers what a wrong configuration gives: FCM SENDER_ID_MISMATCH (the key of
    another project), APNs BadDeviceToken (the other environment's host)."""
    if world.push_service == "apns":
        assert world.apns is not None
        world.apns.wrong_environment = True
    else:
        assert world.fcm is not None
        world.fcm.register_elsewhere(*tokens(world, range(1, world.n + 1)))


def sent_tokens(world: World) -> list[str]:
    if world.push_service == "apns":
        assert world.apns is not None
        return sorted(request.token for request in world.apns.sent)
    assert world.fcm is not None
    return sorted(m["message"]["token"] for m in world.fcm.sent)


@pytest.mark.parametrize("service", SERVICES)
def test_unregistered_tokens_are_skipped_and_removed_and_the_run_succeeds(contract: Setup, service: str) -> None:
    n = 12
    world, path = contract(n, push_service=service)
    unregister(world, (1, 2, 3))

    summary = path.run("push.toml")

    assert summary.code == 0, summary.err[-3000:]  # churn is not a failure cron should hear about
    rows = world.rows("push")
    assert {user: (row["state"], row["reason"]) for user, row in rows.items() if row["state"] != "sent"} == {
        f"u{i}": ("skipped", "token_unregistered") for i in (1, 2, 3)
    }
    assert Counter(row["state"] for row in rows.values()) == {"sent": n - 3, "skipped": 3}
    assert devices(world) == tokens(world, range(4, n + 1))
    with world.db() as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    assert sent_tokens(world) == sorted(tokens(world, range(4, n + 1)))
    assert world.integrity() == "ok"


@pytest.mark.parametrize("service", SERVICES)
def test_a_wrong_configuration_removes_no_token_and_the_run_says_why(contract: Setup, service: str) -> None:
    n = 40
    world, path = contract(n, push_service=service)
    misconfigure(world)

    summary = path.run("push.toml")

    assert summary.code == 1, summary.err[-3000:]  # the deliveries failed, each with the reason
    assert devices(world) == tokens(world, range(1, n + 1))  # not one token removed
    rows = world.rows("push")
    assert {row["state"] for row in rows.values()} == {"dead"}
    with world.db() as conn:
        classes = Counter(row[0] for row in conn.execute("SELECT error_class FROM deliveries WHERE channel='push'"))
        removed = conn.execute("SELECT count(*) FROM audit_events WHERE kind='device_removed'").fetchone()[0]
    assert removed == 0
    # Stopped as misconfigured; on Redis a worker that saw too few answers to judge may have held
    # a delivery back until its attempts ran out (a TransientError): its token is kept all the same.
    assert classes["ProviderMisconfigured"] > 0 and set(classes) <= {"ProviderMisconfigured", "TransientError"}
    if not isinstance(path, Api):
        problems = summary.json["problems"]
        assert problems and all(f"provider '{service}' stopped" in problem for problem in problems)
        assert LIKELY_CAUSE[service] in problems[0] and "No token was removed" in problems[0]
        assert "notifyctl dlq redrive --run" in " ".join(summary.err.split())  # wrapped to the terminal
    assert world.integrity() == "ok"
