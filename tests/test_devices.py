"""Push tokens are seen when registered (again): the API, a users import. `devices prune` removes
those no app has registered for months, and `doctor` counts them."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from notifyctl.app.doctor import diagnose
from notifyctl.store.db import connect, iso
from notifyctl.store.schema import MIGRATIONS
from tests.test_server_harness import running, workspace_with_users
from tests.workspace import Workspace, make_workspace

LONG_AGO = iso(datetime.now(UTC) - timedelta(days=300))


def devices(ws: Workspace) -> dict[tuple[str, str], tuple[str, str]]:
    """(user_id, token) → (created, last_seen)."""
    with ws.db() as conn:
        rows = conn.execute("SELECT user_id, token, created, last_seen FROM devices").fetchall()
    return {(row[0], row[1]): (row[2], row[3]) for row in rows}


def age(ws: Workspace, *tokens: str, when: str = LONG_AGO) -> None:
    """Make these tokens look registered (first and last) at `when`."""
    with ws.db() as conn:
        conn.executemany("UPDATE devices SET created=?, last_seen=? WHERE token=?", [(when, when, t) for t in tokens])


def test_migration_0006_starts_every_existing_token_from_its_creation(tmp_path: Path) -> None:
    path = tmp_path / "notifyctl.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
    names = [name for name, _ in MIGRATIONS]
    for name, sql in MIGRATIONS[: names.index("0007_device_last_seen")]:
        for statement in sql.split(";") if isinstance(sql, str) else sql:
            if statement.strip():
                old.execute(statement)
        old.execute("INSERT INTO migrations VALUES (?, ?)", (name, iso()))
    old.execute("INSERT INTO devices VALUES ('u1', 't1', 'ios', ?)", (LONG_AGO,))
    old.close()

    conn = connect(path)  # migrates

    assert [tuple(row) for row in conn.execute("SELECT token, created, last_seen FROM devices")] == [
        ("t1", LONG_AGO, LONG_AGO)
    ]
    conn.close()


async def test_a_token_registered_again_through_the_api_is_seen_again(tmp_path: Path) -> None:
    ws = workspace_with_users(tmp_path)
    async with running(ws) as srv:
        status, _ = await srv.api("POST", "/v1/users/u1/devices", json={"token": "tok-1", "platform": "ios"})
        assert status == 201
        age(ws, "tok-1")
        status, body = await srv.api("POST", "/v1/users/u1/devices", json={"token": "tok-1"})
        assert status == 200 and body["created"] is False
    created, last_seen = devices(ws)[("u1", "tok-1")]
    assert created == LONG_AGO and last_seen > iso(datetime.now(UTC) - timedelta(minutes=5))


def test_a_users_import_carrying_a_token_again_marks_it_seen(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", "user_id,push_tokens\nu1,kept|dropped\nu2,other\n")
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    age(ws, "kept", "dropped", "other")
    ws.write("again.csv", "user_id,push_tokens\nu1,kept\n")

    assert ws.cli("users", "import", "again.csv").exit_code == 0

    found = devices(ws)
    assert found[("u1", "kept")][0] == LONG_AGO and found[("u1", "kept")][1] > LONG_AGO
    assert found[("u1", "dropped")] == (LONG_AGO, LONG_AGO) == found[("u2", "other")]


@pytest.fixture
def stale(tmp_path: Path) -> Workspace:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", "user_id,push_tokens\nu1,old-1|fresh-1\nu2,old-2\nu3,fresh-3\n")
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    age(ws, "old-1", "old-2")
    age(ws, "fresh-3", when=iso(datetime.now(UTC) - timedelta(days=200)))
    return ws


def test_devices_prune_removes_the_tokens_not_seen_for_the_age_given_and_audits_it(stale: Workspace) -> None:
    dry = stale.cli("devices", "prune", "--older-than", "270d", "--dry-run", "--json")

    assert dry.exit_code == 0, dry.stderr
    assert orjson.loads(dry.stdout) | {"seen_before": ""} == {
        "stale": 2,
        "removed": 0,
        "seen_before": "",
        "dry_run": True,
    }
    assert len(devices(stale)) == 4

    pruned = stale.cli("devices", "prune", "--older-than", "270d", "--json")

    assert pruned.exit_code == 0, pruned.stderr
    report = orjson.loads(pruned.stdout)
    assert (report["stale"], report["removed"], report["dry_run"]) == (2, 2, False)
    assert sorted(devices(stale)) == [("u1", "fresh-1"), ("u3", "fresh-3")]
    with stale.db() as conn:
        [(detail,)] = conn.execute("SELECT detail FROM audit_events WHERE kind='devices_pruned'").fetchall()
    assert orjson.loads(detail) == {"removed": 2, "seen_before": report["seen_before"], "source": "cli"}

    by_weeks = stale.cli("devices", "prune", "--older-than", "20w")
    assert by_weeks.exit_code == 0 and "removed 1 push token(s)" in by_weeks.stdout
    assert sorted(devices(stale)) == [("u1", "fresh-1")]


@pytest.mark.parametrize("older_than", ["270", "0d", "9 months", "-3d"])
def test_devices_prune_refuses_an_age_it_cannot_read(stale: Workspace, older_than: str) -> None:
    result = stale.cli("devices", "prune", "--older-than", older_than)
    assert result.exit_code == 2
    assert "is not an age like 270d" in " ".join(result.stderr.split())
    assert len(devices(stale)) == 4


async def test_doctor_counts_the_tokens_not_registered_for_270_days(stale: Workspace) -> None:
    checks = {check.area: check for check in await diagnose(stale.config, environ={}, probe_providers=False)}

    assert checks["devices"].status == "warn"
    assert checks["devices"].message == (
        "2 push token(s) not registered again for 270 days: notifyctl devices prune --older-than 270d"
    )
    assert stale.cli("devices", "prune").exit_code == 0  # 270 days unless told otherwise
    checks = {check.area: check for check in await diagnose(stale.config, environ={}, probe_providers=False)}
    assert (checks["devices"].status, checks["devices"].message) == ("ok", "no push token older than 270 days")
