"""Webhook endpoints: secret rotation with a grace period, show/enable, disabling after long failure."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from notifyctl.cli import app
from notifyctl.cli.admin import register
from notifyctl.models import User
from notifyctl.store import endpoints
from notifyctl.store.db import connect
from notifyctl.store.directory import upsert_users
from notifyctl.store.endpoints import credentials as endpoint_credentials
from tests.webhook_sink import SINK_SECRET, WebhookSink
from tests.workspace import audience_csv, campaign_toml, make_workspace, users_csv


def ensure_registered() -> None:
    if not any(command.name == "doctor" for command in app.registered_commands):
        register(app)


ensure_registered()


def signing_secrets(conn: sqlite3.Connection, user_id: str, now: datetime) -> list[str]:
    return endpoint_credentials(conn, [user_id], now)[user_id][0]


def test_rotation_signs_with_both_secrets_during_the_grace_period(tmp_path: Path) -> None:
    with WebhookSink(secrets=[SINK_SECRET]) as sink:
        ws = make_workspace(tmp_path)
        ws.write("users.csv", users_csv(1, webhook_url=sink.url()))
        ws.write("aud.csv", audience_csv(1))
        assert ws.cli("users", "import", "users.csv").exit_code == 0

        rotated = ws.cli("endpoints", "rotate-secret", "u1", "--grace-hours", "24", "--json")
        assert rotated.exit_code == 0, rotated.output
        new_secret = orjson.loads(rotated.stdout)["secret"]
        assert new_secret.startswith("whsec_") and new_secret != SINK_SECRET
        sink.secrets.append(new_secret)

        ws.write("c1.toml", campaign_toml("c1", "welcome", ["webhook"], "aud.csv"))
        assert ws.cli("broadcast", "c1.toml", "--json").exit_code == 0
        during_grace = sink.wait_for(1)[-1]
        assert during_grace.verified_by == (0, 1)  # a receiver on either secret accepts it
        assert len(during_grace.headers["webhook-signature"].split()) == 2

        with ws.db() as conn:  # the grace period is over
            past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
            conn.execute("UPDATE endpoints SET previous_secret_until=?", (past,))
        ws.write("c2.toml", campaign_toml("c2", "welcome", ["webhook"], "aud.csv"))
        assert ws.cli("broadcast", "c2.toml", "--json").exit_code == 0
        after_grace = sink.wait_for(2)[-1]
        assert after_grace.verified_by == (1,)
        assert len(after_grace.headers["webhook-signature"].split()) == 1

        shown = ws.cli("endpoints", "show", "u1", "--json")
        assert shown.exit_code == 0
        assert new_secret not in shown.stdout and SINK_SECRET not in shown.stdout
        assert orjson.loads(shown.stdout)["previous_secret"] is None


def test_rotate_without_grace_drops_the_old_secret_at_once(tmp_path: Path) -> None:
    conn = connect(tmp_path / "n.db")
    upsert_users(conn, [User(user_id="u1", webhook_url="https://hooks.example.com/x", webhook_secret=SINK_SECRET)])
    now = datetime.now(UTC)
    new = endpoints.rotate_secret(conn, "u1", 0, now)
    assert signing_secrets(conn, "u1", now) == [new]
    newer = endpoints.rotate_secret(conn, "u1", 1, now)
    assert signing_secrets(conn, "u1", now) == [newer, new]
    assert signing_secrets(conn, "u1", now + timedelta(hours=2)) == [newer]
    events = [row[0] for row in conn.execute("SELECT detail FROM audit_events WHERE kind='endpoint_secret_rotated'")]
    assert len(events) == 2 and all("whsec_" not in e for e in events)


@pytest.mark.parametrize(
    ("failures_at_s", "disable_after_s", "disabled_at_index"),
    [
        pytest.param([0, 10, 20], 30, None, id="not-long-enough"),
        pytest.param([0, 10, 31], 30, 2, id="disabled-after-the-period"),
        pytest.param([0, 31, 40], 30, 1, id="disabled-on-first-failure-past-the-period"),
    ],
)
def test_record_failure_disables_an_endpoint_failing_for_the_period(
    tmp_path: Path, failures_at_s: list[int], disable_after_s: float, disabled_at_index: int | None
) -> None:
    conn = connect(tmp_path / "n.db")
    upsert_users(conn, [User(user_id="u1", webhook_url="https://hooks.example.com/x", webhook_secret=SINK_SECRET)])
    start = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    verdicts = [endpoints.record_failure(conn, "u1", start + timedelta(seconds=s), disable_after_s)
                for s in failures_at_s]  # fmt: skip
    expected = [i == disabled_at_index for i in range(len(failures_at_s))]
    assert verdicts == expected
    row = conn.execute("SELECT disabled_at, disabled_reason FROM endpoints").fetchone()
    assert (row["disabled_reason"] == "failing") == (disabled_at_index is not None)
    if disabled_at_index is not None:
        assert endpoints.enable(conn, "u1") is True
        assert endpoints.enable(conn, "u1") is False
        assert conn.execute("SELECT disabled_at, failing_since FROM endpoints").fetchone()[:] == (None, None)


def test_a_success_restarts_the_failure_clock(tmp_path: Path) -> None:
    conn = connect(tmp_path / "n.db")
    upsert_users(conn, [User(user_id="u1", webhook_url="https://hooks.example.com/x", webhook_secret=SINK_SECRET)])
    start = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert not endpoints.record_failure(conn, "u1", start, 30)
    endpoints.record_success(conn, "u1")
    assert not endpoints.record_failure(conn, "u1", start + timedelta(seconds=40), 30)
    assert not endpoints.record_failure(conn, "u1", start + timedelta(seconds=60), 30)
    assert endpoints.record_failure(conn, "u1", start + timedelta(seconds=71), 30)


def test_endpoint_commands_on_a_user_without_endpoint_exit_2(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(1))
    ws.cli("users", "import", "users.csv")
    for args in (["rotate-secret", "u1"], ["show", "u1"], ["enable", "u1"]):
        result = ws.cli("endpoints", *args)
        assert result.exit_code == 2
        assert "has no webhook endpoint" in result.stderr
