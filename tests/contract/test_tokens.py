"""Push token hygiene, the same on every path: a token gone for good is skipped and removed (routine
churn does not fail a run), and a wrong configuration posing as churn removes no token."""

from __future__ import annotations

from collections import Counter

from tests.contract.conftest import Setup
from tests.contract.paths import Api
from tests.contract.world import World


def devices(world: World) -> set[str]:
    with world.db() as conn:
        return {row[0] for row in conn.execute("SELECT token FROM devices")}


def test_unregistered_tokens_are_skipped_and_removed_and_the_run_succeeds(contract: Setup) -> None:
    n = 12
    world, path = contract(n)
    assert world.fcm is not None
    world.fcm.unregister("t1", "t2", "t3")  # apps uninstalled since the tokens were registered

    summary = path.run("push.toml")

    assert summary.code == 0, summary.err[-3000:]  # churn is not a failure cron should hear about
    rows = world.rows("push")
    assert {user: (row["state"], row["reason"]) for user, row in rows.items() if row["state"] != "sent"} == {
        f"u{i}": ("skipped", "token_unregistered") for i in (1, 2, 3)
    }
    assert Counter(row["state"] for row in rows.values()) == {"sent": n - 3, "skipped": 3}
    assert devices(world) == {f"t{i}" for i in range(4, n + 1)}
    with world.db() as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    assert sorted(m["message"]["token"] for m in world.fcm.sent) == sorted(f"t{i}" for i in range(4, n + 1))
    assert world.integrity() == "ok"


def test_a_wrong_project_removes_no_token_and_the_run_says_why(contract: Setup) -> None:
    n = 40
    world, path = contract(n)
    assert world.fcm is not None
    # Every token answers SENDER_ID_MISMATCH: what FCM says when the key is another project's.
    world.fcm.register_elsewhere(*(f"t{i}" for i in range(1, n + 1)))

    summary = path.run("push.toml")

    assert summary.code == 1, summary.err[-3000:]  # the deliveries failed, each with the reason
    assert devices(world) == {f"t{i}" for i in range(1, n + 1)}  # not one token removed
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
        assert problems and all("provider 'fcm' stopped" in problem for problem in problems)
        assert "another Firebase project" in problems[0] and "No token was removed" in problems[0]
        assert "notifyctl dlq redrive --run" in summary.err
    assert world.integrity() == "ok"
