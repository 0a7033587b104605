"""Right to erasure: `notifyctl users forget` removes personal data, keeps a hashed suppression, is audited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from notifyctl.app.broadcast import broadcast
from notifyctl.app.context import Context
from notifyctl.app.erase import forget_user
from notifyctl.app.resume import due_runs, resume
from notifyctl.cli import app
from notifyctl.cli.admin import register
from notifyctl.errors import InputError
from notifyctl.intake.campaigns import load_campaign
from notifyctl.pipeline.engine import RunOutcome
from notifyctl.security.erasure import address_hash, erasure_key
from notifyctl.settings import load_settings
from notifyctl.store.db import connect
from notifyctl.store.erasure import hashed_suppressed
from notifyctl.store.secrets import installation_secret
from tests.webhook_sink import SINK_SECRET, WebhookSink, respond
from tests.workspace import audience_csv, campaign_toml, make_workspace

if not any(command.name == "doctor" for command in app.registered_commands):
    register(app)

FORGOTTEN_EMAIL = "Grace.Hopper@Example.com"
FORGOTTEN_PII = ("grace.hopper@example.com", "Grace.Hopper", "/hook/grace", "Grace", "'grace-77'")


def db_text(path: Path) -> str:
    conn = connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_forget_erases_personal_data_but_keeps_the_hashed_suppression(tmp_path: Path) -> None:
    with WebhookSink() as sink:
        sink.on_path("/hook/grace", respond(410))  # grace's send dead-letters with its envelope kept
        ws = make_workspace(tmp_path)
        ws.write(
            "users.csv",
            "user_id,email,locale,first_name,webhook_url,webhook_secret\n"
            f"grace-77,{FORGOTTEN_EMAIL},en,Grace,{sink.url('/hook/grace')},{SINK_SECRET}\n"
            f"ada-1,ada@example.com,en,Ada,{sink.url('/hook/ada')},{SINK_SECRET}\n",
        )
        ws.write("aud.csv", "user_id,first_name\ngrace-77,Grace\nada-1,Ada\n")
        ws.write("c.toml", campaign_toml("c1", "welcome", ["webhook", "email", "inapp"], "aud.csv"))
        assert ws.cli("users", "import", "users.csv").exit_code == 0
        assert ws.cli("prefs", "set", "grace-77", "--channel", "sms", "--category", "marketing", "--off").exit_code == 0
        assert ws.cli("suppress", "add", "email", FORGOTTEN_EMAIL, "--reason", "complaint").exit_code == 0
        ws.cli("broadcast", "c.toml", "--json")
        before = db_text(ws.db_path)
        assert "grace.hopper@example.com" in before and "/hook/grace" in before

        refused = ws.cli("users", "forget", "grace-77", input="y\n")  # no terminal: --yes or nothing
        assert refused.exit_code == 2 and "--yes" in refused.stderr
        result = ws.cli("users", "forget", "grace-77", "--yes", "--json")
        assert result.exit_code == 0, result.output

    counts = orjson.loads(result.stdout)["counts"]
    assert counts["users"] == 1 and counts["endpoints"] == 1 and counts["preferences"] == 1
    assert counts["inbox"] == 1 and counts["deliveries"] == 3 and counts["hashed_suppressions"] >= 2
    after = db_text(ws.db_path)
    for pii in FORGOTTEN_PII:
        assert pii not in after, f"{pii!r} survived the erasure"
    assert "ada@example.com" in after and "'ada-1'" in after  # nobody else was touched

    settings = load_settings(ws.config)
    conn = connect(ws.db_path)
    keys = [installation_secret(conn, settings).erasure_key]
    assert keys == [erasure_key("test-secret")]  # make_workspace's unsubscribe_secret
    assert hashed_suppressed(conn, "email", "grace.hopper@example.com", keys) == "complaint"
    assert hashed_suppressed(conn, "webhook", sink.url("/hook/grace"), keys) == "erased"
    assert hashed_suppressed(conn, "inapp", "grace-77", keys) == "erased"  # in-app messages go to the user id
    assert hashed_suppressed(conn, "email", "ada@example.com", keys) is None
    assert hashed_suppressed(conn, "email", "grace.hopper@example.com", [b"another key"]) is None
    assert conn.execute("SELECT count(*) FROM suppressions WHERE channel='email'").fetchone()[0] == 0

    dead = conn.execute("SELECT envelope FROM dead_letters").fetchall()
    assert dead, "the 410 should have left a dead letter"
    envelopes = [orjson.loads(row[0]) for row in dead]
    assert all(e["user_id"].startswith("erased:") and e["parts"] == {} for e in envelopes)
    states = dict(conn.execute("SELECT channel, state FROM deliveries WHERE user_id LIKE 'erased:%'").fetchall())
    assert states["webhook"] == "dead" and states["email"] == "skipped"  # the audit keeps its shape

    subject, detail = conn.execute("SELECT subject, detail FROM audit_events WHERE kind='user_forgotten'").fetchone()
    assert subject.startswith("erased:") and orjson.loads(detail) == counts


def test_forgetting_an_unknown_user_is_an_input_error(tmp_path: Path) -> None:
    conn = connect(tmp_path / "n.db")
    with pytest.raises(InputError, match="unknown user"):
        forget_user(conn, "nobody", b"k" * 32)


def test_address_hash_is_keyed_and_per_channel() -> None:
    key = b"k" * 32
    assert address_hash("email", "a@example.com", key) != address_hash("email", "a@example.com", b"x" * 32)
    assert address_hash("email", "a@example.com", key) != address_hash("webhook", "a@example.com", key)
    assert len(address_hash("email", "a@example.com", key)) == 64


def test_forget_with_audience_rows_only_in_the_audit(tmp_path: Path) -> None:
    """A user already gone from the directory can still be erased from the audit log."""
    ws = make_workspace(tmp_path)
    ws.write("users.csv", "user_id,email,first_name\nu1,u1@example.com,Una\n")
    ws.write("aud.csv", audience_csv(1))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], "aud.csv"))
    ws.cli("users", "import", "users.csv")
    assert ws.cli("broadcast", "c.toml", "--json").exit_code == 0
    with ws.db() as conn:
        conn.execute("DELETE FROM users")
    assert ws.cli("users", "forget", "u1", "--yes").exit_code == 0
    assert "u1@example.com" not in db_text(ws.db_path)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_forgotten_user_gets_no_in_app_message_from_a_run_planned_before(tmp_path: Path) -> None:
    """In-app messages are addressed by user id: erasure must suppress that too, or a scheduled run
    planned before `users forget` writes a new inbox row once a directory sync brings the user back."""
    ws = make_workspace(tmp_path)
    users = "user_id,email,first_name\ngrace-77,grace@example.com,Grace\nada-1,ada@example.com,Ada\n"
    ws.write("users.csv", users)
    ws.write("aud.csv", "user_id,first_name\ngrace-77,Grace\nada-1,Ada\n")
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email", "inapp"], "aud.csv", send_at="2026-11-21T15:00:00Z"))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    clock = FakeClock(datetime(2026, 11, 21, 14, 0, tzinfo=UTC))
    ctx = Context.open(load_settings(ws.config), clock)
    scheduled = asyncio.run(broadcast(ctx, load_campaign(ws.root / "c.toml")))
    assert not isinstance(scheduled, RunOutcome) and scheduled.state == "scheduled"

    assert ws.cli("users", "forget", "grace-77", "--yes").exit_code == 0
    assert ws.cli("users", "import", "users.csv").exit_code == 0  # a nightly sync brings the user back

    clock.now = datetime(2026, 11, 21, 15, 0, 1, tzinfo=UTC)
    assert due_runs(ctx) == [scheduled.run_id]  # what `resume --due` finishes
    done = asyncio.run(resume(ctx, scheduled.run_id))
    assert isinstance(done, RunOutcome) and done.state == "completed"
    with ws.db() as conn:
        inbox = [row[0] for row in conn.execute("SELECT user_id FROM inbox")]
        rows = conn.execute("SELECT channel, state, reason FROM deliveries WHERE user_id='grace-77'").fetchall()
    assert inbox == ["ada-1"]
    assert {channel: (state, reason) for channel, state, reason in rows} == {
        "email": ("skipped", "suppressed:erased"),
        "inapp": ("skipped", "suppressed:erased"),
    }


def test_an_address_holding_the_user_id_is_erased_whole(tmp_path: Path) -> None:
    """The user id is erased from the audit's texts too, after any address that contains it."""
    ws = make_workspace(tmp_path)
    ws.write("users.csv", "user_id,email,first_name\ngrace-77,grace-77@hopper-family.example,Grace\n")
    ws.write("aud.csv", "user_id,first_name\ngrace-77,Grace\n")
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], "aud.csv"))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    assert ws.cli("broadcast", "c.toml", "--json").exit_code == 0
    with ws.db() as conn:  # as a provider's refusal would quote it
        conn.execute("UPDATE deliveries SET error_message='550 grace-77@hopper-family.example: no such user'")
    assert ws.cli("users", "forget", "grace-77", "--yes").exit_code == 0
    after = db_text(ws.db_path)
    assert "grace-77" not in after and "hopper-family" not in after
