"""A database written by the previous release opens, migrates and resumes under this tree.

The fixture, tests/fixtures/upgrade_bea677a/, is a workspace made by the CLI of bea677a (the last
release before the package moved into rooms): its config, the welcome template, four campaigns
with their audiences, and its database (migrations 0001-0004) holding

- done-run: a completed broadcast to 5 users on email (the outbox folder) and in-app;
- killed-run: an in-app broadcast to 300 users killed -9 mid-way: 101 sent, 187 pending, 12 in
  flight, 5 of which had already written their inbox row (their outcome had not been recorded);
- later-run: a broadcast scheduled for 2099, not planned yet;
- night-run: a marketing broadcast to 3 users in Pacific/Honolulu, deferred by the in-app quiet
  hours until 08:00 there (2026-12-03T18:00Z), the run `waiting`.

How it was made (build.sh beside it says what each step does):

    git -C /work/main worktree add /work/wt-old bea677a
    cd /work/wt-old && python3 -m venv .venv && .venv/bin/pip install -q -e .
    # at 07:40 in Honolulu (17:40Z), from this tree:
    bash tests/fixtures/upgrade_bea677a/build.sh /work/wt-old/.venv/bin /tmp/notifyctl-fixture 300 Pacific/Honolulu
    #   users import; broadcast done-run; broadcast killed-run in the background and, once a third is
    #   sent, hold the database's write lock for half a second (sends in flight stop before their
    #   inbox row or their outcome is written) and kill -9 it; broadcast later-run; broadcast
    #   night-run; then checkpoint the log, VACUUM and check integrity. Run it again until the
    #   killed run has rows in flight, some of them already in the inbox.
    cp /tmp/notifyctl-fixture/notifyctl.{db,toml} tests/fixtures/upgrade_bea677a/
    cp -r /tmp/notifyctl-fixture/{campaigns,templates} tests/fixtures/upgrade_bea677a/
    git -C /work/main worktree remove --force /work/wt-old

A copy is what each test opens, with two changes for a workspace that moved to another machine: the
runs' audience paths point at the copy, and the killed process's pid in the locks table becomes one
above Linux's pid limit (here it could belong to a live process). The config's in-app quiet hours
are dropped, so that what the tests send does not depend on the hour in Honolulu.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.workspace import Workspace

FIXTURE = Path(__file__).parent / "fixtures" / "upgrade_bea677a"
BUILT_IN = "/tmp/notifyctl-fixture/"
DEAD_PID = 2**22 + 1  # above PID_MAX_LIMIT: never a live process
N_KILLED = 300


@pytest.fixture
def old(tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("build.sh"))
    with sqlite3.connect(root / "notifyctl.db") as conn:
        conn.execute("UPDATE runs SET audience_path = replace(audience_path, ?, ?)", (BUILT_IN, f"{root}/"))
        conn.execute("UPDATE locks SET pid = ?", (DEAD_PID,))
    config = root / "notifyctl.toml"
    config.write_text(config.read_text().replace('channels = ["inapp"]', "channels = []"))
    yield Workspace(root)


def _run_ids(ws: Workspace) -> dict[str, str]:
    with ws.db() as conn:
        return {row["campaign_id"]: row["run_id"] for row in conn.execute("SELECT campaign_id, run_id FROM runs")}


def _rows(conn: sqlite3.Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sql, params)]


def _snapshot(ws: Workspace, run_id: str) -> list[list[tuple[Any, ...]]]:
    """Everything recorded about a run: its row, deliveries, attempts and inbox rows."""
    with ws.db() as conn:
        # end_reason (0008) is added by the upgrade, NULL for every run of the earlier release.
        columns = ", ".join(row[1] for row in conn.execute("PRAGMA table_info(runs)") if row[1] != "end_reason")
        return [
            _rows(conn, f"SELECT {columns} FROM runs WHERE run_id=?", run_id),
            _rows(conn, "SELECT * FROM deliveries WHERE run_id=? ORDER BY id", run_id),
            _rows(
                conn,
                "SELECT a.* FROM attempts a JOIN deliveries d ON d.id=a.delivery_id WHERE d.run_id=? ORDER BY a.id",
                run_id,
            ),
            _rows(
                conn,
                "SELECT i.* FROM inbox i JOIN deliveries d ON d.id=i.delivery_id WHERE d.run_id=? ORDER BY i.id",
                run_id,
            ),
        ]


def _cli_json(ws: Workspace, *args: str) -> Any:
    result = ws.cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def _integrity(ws: Workspace) -> str:
    with ws.db() as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_the_fixture_is_what_the_old_release_left(old: Workspace) -> None:
    with old.db() as conn:
        migrations = {row[0] for row in conn.execute("SELECT name FROM migrations")}
        states = dict(_rows(conn, "SELECT campaign_id, state FROM runs"))
        killed = dict(
            _rows(
                conn,
                "SELECT d.state, count(*) FROM deliveries d JOIN runs r USING (run_id) "
                "WHERE r.campaign_id='killed-run' GROUP BY 1",
            )
        )
    assert "0005_cluster_runs" not in migrations and "0004_receipt_indexes" in migrations
    assert states == {
        "done-run": "completed",
        "killed-run": "running",
        "later-run": "scheduled",
        "night-run": "waiting",
    }
    assert killed["inflight"] > 0 and killed["pending"] > 0 and killed["sent"] > 0


def test_runs_list_and_resume_finish_the_killed_broadcast(old: Workspace) -> None:
    run_ids = _run_ids(old)
    killed, done = run_ids["killed-run"], run_ids["done-run"]
    done_before = _snapshot(old, done)
    with old.db() as conn:
        in_flight = [row[0] for row in conn.execute("SELECT id FROM deliveries WHERE state='inflight'")]
        inbox_before = dict(_rows(conn, "SELECT delivery_id, id FROM inbox"))
    already_in_inbox = [d for d in in_flight if d in inbox_before]
    assert already_in_inbox and len(already_in_inbox) < len(in_flight)  # both kinds of in-flight row

    listed = {run["campaign_id"]: run for run in _cli_json(old, "runs", "list")}
    assert {name: run["state"] for name, run in listed.items()} == {
        "done-run": "completed",
        "killed-run": "running",
        "later-run": "scheduled",
        "night-run": "waiting",
    }
    assert listed["killed-run"]["counts"]["inapp"] == {"inflight": len(in_flight), "pending": 187, "sent": 101}
    with old.db() as conn:
        assert "0005_cluster_runs" in {row[0] for row in conn.execute("SELECT name FROM migrations")}

    outcome = _cli_json(old, "resume", killed)

    assert outcome["state"] == "completed"
    assert outcome["counts"] == {"inapp": {"sent": N_KILLED}}
    assert outcome["sent_this_session"] == 187 + len(in_flight)  # the pending ones and those in doubt
    with old.db() as conn:
        deliveries = {row["id"]: row for row in conn.execute("SELECT * FROM deliveries WHERE run_id=?", (killed,))}
        inbox = _rows(
            conn,
            "SELECT i.delivery_id, i.id FROM inbox i JOIN deliveries d ON d.id=i.delivery_id WHERE d.run_id=?",
            killed,
        )
        outcomes = {
            delivery_id: [
                row[0]
                for row in conn.execute(
                    "SELECT outcome FROM attempts WHERE delivery_id=? ORDER BY number", (delivery_id,)
                )
            ]
            for delivery_id in in_flight
        }
    # Every delivery settled once: sent, with exactly one inbox row, the inbox deduplicating the
    # in-doubt re-sends of those that had reached it before the kill.
    assert {row["state"] for row in deliveries.values()} == {"sent"}
    assert sorted(delivery_id for delivery_id, _ in inbox) == sorted(deliveries)
    inbox_after = dict(inbox)
    assert all(inbox_after[d] == inbox_before[d] for d in already_in_inbox)
    assert all(deliveries[d]["provider_message_id"] == str(inbox_after[d]) for d in in_flight)
    # In flight at the kill: in doubt, and re-sent because the in-app inbox dedupes.
    assert {d for d, row in deliveries.items() if row["in_doubt"]} == set(in_flight)
    assert all(outcomes[d] == ["in_doubt", "sent"] for d in in_flight), outcomes
    assert _snapshot(old, done) == done_before
    assert _integrity(old) == "ok"


def test_resume_due_finishes_the_due_runs_and_the_scheduled_one_waits(old: Workspace) -> None:
    run_ids = _run_ids(old)
    with old.db() as conn:
        due_at = conn.execute("SELECT max(defer_until) FROM deliveries WHERE state='deferred'").fetchone()[0]
    assert datetime.fromisoformat(due_at) < datetime.now(UTC), "the night-run's rows are due from 2026-12-03T18:00Z"
    done_before = _snapshot(old, run_ids["done-run"])

    resumed = {entry["run_id"]: entry for entry in _cli_json(old, "resume", "--due")["resumed"]}

    assert set(resumed) == {run_ids["killed-run"], run_ids["night-run"]}  # not the one scheduled for 2099
    assert resumed[run_ids["killed-run"]]["counts"] == {"inapp": {"sent": N_KILLED}}
    assert resumed[run_ids["night-run"]]["state"] == "completed"
    assert resumed[run_ids["night-run"]]["counts"] == {"inapp": {"sent": 3}}
    assert _cli_json(old, "resume", "--due") == {"resumed": []}

    later = _cli_json(old, "resume", run_ids["later-run"])  # planned now, from its audience file

    assert later["state"] == "completed" and later["counts"] == {"inapp": {"sent": 5}}
    with old.db() as conn:
        assert _rows(conn, "SELECT count(*), count(DISTINCT delivery_id) FROM inbox") == [(5 + N_KILLED + 3 + 5,) * 2]
    assert _snapshot(old, run_ids["done-run"]) == done_before
    assert _integrity(old) == "ok"
