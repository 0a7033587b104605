"""Cron never wedges (issue 17.3): a run that fails before it is planned ends `failed` with its reason,
`resume --due` goes past a run that fails, `runs cancel` ends a run, `doctor` sees stuck and overdue runs."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from tests.workspace import Workspace, audience_csv, campaign_toml, make_workspace, users_csv


def _soon(seconds: float) -> tuple[str, float]:
    """A send_at `seconds` from now (whole seconds, as campaigns write it), and its epoch time."""
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0) + timedelta(seconds=1)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ"), at.timestamp()


def _said(text: str) -> str:
    """Text as written, whatever the console wrapped."""
    return " ".join(text.split())


def _runs(ws: Workspace) -> dict[str, dict[str, object]]:
    listed = ws.cli("runs", "list", "--json")
    assert listed.exit_code == 0, listed.output
    return {run["run_id"]: run for run in orjson.loads(listed.stdout)}


def _workspace(tmp_path: Path) -> Workspace:
    """Email goes to an outbox folder under a file (it cannot be set up); in-app works."""
    ws = make_workspace(tmp_path, providers={"outbox": {"type": "outbox", "path": "users.csv/outbox"}})
    ws.write("users.csv", users_csv(3))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    ws.write("aud.csv", audience_csv(3))
    return ws


def test_a_send_that_fails_at_set_up_does_not_wedge_cron(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    send_at, due = _soon(2)
    ws.write("later.toml", campaign_toml("later", "welcome", ["inapp"], "aud.csv", send_at=send_at))
    ws.write("changed.csv", audience_csv(2))
    ws.write("broken.toml", campaign_toml("broken", "welcome", ["inapp"], "changed.csv", send_at=send_at))
    for campaign in ("broken.toml", "later.toml"):
        scheduled = ws.cli("broadcast", campaign, "--json")
        assert scheduled.exit_code == 0, scheduled.output
    ws.write("changed.csv", audience_csv(3))  # the scheduled run's input changed: it cannot go on

    failed = ws.cli("send", "-t", "welcome", "-u", "u1", "--channel", "email", "--data", '{"product_name": "A"}')
    assert failed.exit_code == 2
    assert "Not a directory" in _said(failed.stderr)
    by_id = _runs(ws)
    (send,) = [run for run in by_id.values() if run["kind"] == "send"]
    assert send["state"] == "failed"
    assert "outbox write failed" in str(send["end_reason"])

    time.sleep(max(0.0, due - time.time() + 0.2))
    cron = ws.cli("resume", "--due", "--json")
    assert cron.exit_code == 1, cron.output  # one due run failed: cron hears of it
    by_campaign = {run["campaign_id"]: run for run in _runs(ws).values()}
    broken, later = by_campaign["broken"], by_campaign["later"]
    said = _said(cron.stderr)
    assert f"run {broken['run_id']} failed" in said and "changed since the run started" in said
    resumed = {entry["run_id"]: entry for entry in orjson.loads(cron.stdout)["resumed"]}
    assert set(resumed) == {broken["run_id"], later["run_id"]}  # the failed send is not due any more
    assert "changed since" in resumed[str(broken["run_id"])]["failed"]
    assert later["state"] == "completed" and later["counts"] == {"inapp": {"sent": 3}}
    assert broken["state"] == "failed" and "changed since" in str(broken["end_reason"])

    again = ws.cli("resume", "--due", "--json")
    assert again.exit_code == 0, again.output
    assert orjson.loads(again.stdout) == {"resumed": []}
    ended = ws.cli("runs", "cancel", str(broken["run_id"]))  # a failed run may be ended for good
    assert ended.exit_code == 0, ended.output
    assert _runs(ws)[str(broken["run_id"])]["state"] == "cancelled"


def test_a_failed_broadcast_is_resumed_by_name_once_its_cause_is_fixed(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], "aud.csv"))
    failed = ws.cli("broadcast", "c.toml")
    assert failed.exit_code == 2 and "Not a directory" in _said(failed.stderr)
    ((run_id, run),) = _runs(ws).items()
    assert run["state"] == "failed" and run["counts"] == {}
    assert orjson.loads(ws.cli("resume", "--due", "--json").stdout) == {"resumed": []}  # cron leaves it
    ws.config.write_text(ws.config.read_text().replace('"users.csv/outbox"', '"outbox"'))
    resumed = ws.cli("resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed.output
    run = _runs(ws)[run_id]
    assert run["state"] == "completed" and run["end_reason"] is None
    assert run["counts"] == {"email": {"sent": 3}}


def test_an_unplanned_send_left_running_by_an_earlier_release_is_ended_not_retried(tmp_path: Path) -> None:
    """The wedge as an earlier release left it: a send run `running`, never planned, no process on it."""
    ws = _workspace(tmp_path)
    with ws.db() as conn:
        conn.execute(
            """INSERT INTO runs (run_id, kind, template, template_version, category, channels, state, created)
               VALUES ('send_old', 'send', 'welcome', 'v', 'marketing', '["email"]', 'running', '2026-11-01')"""
        )
    doctor = ws.cli("doctor", "--offline", "--json")
    assert any("send_old is stuck" in check["message"] for check in orjson.loads(doctor.stdout)["checks"])
    cron = ws.cli("resume", "--due")
    assert cron.exit_code == 1 and "run send_old failed" in _said(cron.stderr)
    assert _runs(ws)["send_old"]["state"] == "failed"
    assert ws.cli("resume", "--due").exit_code == 0


def test_cancel_skips_what_is_left_audits_it_and_is_never_resumed(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    send_at, _ = _soon(3600)
    ws.write("later.toml", campaign_toml("later", "welcome", ["inapp"], "aud.csv", send_at=send_at))
    assert ws.cli("broadcast", "later.toml").exit_code == 0
    ws.write("now.toml", campaign_toml("now", "welcome", ["inapp"], "aud.csv"))
    assert ws.cli("broadcast", "now.toml").exit_code == 0
    by_campaign = {run["campaign_id"]: run for run in _runs(ws).values()}
    done, later = str(by_campaign["now"]["run_id"]), str(by_campaign["later"]["run_id"])
    # What a crash mid-run leaves: deliveries pending (and one in flight) on a run no process holds.
    with ws.db() as conn:
        conn.execute("UPDATE runs SET state='interrupted', planned=1 WHERE run_id=?", (later,))
        conn.executemany(
            """INSERT INTO deliveries (run_id, line, user_id, channel, address, idempotency_key, event_id,
                 template, template_version, category, state, attempts, message_id, created, updated)
               VALUES (?, ?, ?, 'inapp', ?, ?, 'later', 'welcome', 'v', 'marketing', ?, ?, ?, '2026', '2026')""",
            [(later, i, f"u{i}", f"u{i}", f"k{i}", state, 1 if state == "inflight" else 0, f"m{i}")
             for i, state in ((1, "pending"), (2, "deferred"), (3, "inflight"))],
        )  # fmt: skip
        conn.execute(
            "INSERT INTO attempts (delivery_id, number, provider, started, outcome) "
            "SELECT id, 1, 'inapp', '2026', 'inflight' FROM deliveries WHERE run_id=? AND state='inflight'",
            (later,),
        )

    cancelled = ws.cli("runs", "cancel", later, "--json")
    assert cancelled.exit_code == 0, cancelled.output
    payload = orjson.loads(cancelled.stdout)
    assert payload["state"] == "cancelled" and payload["skipped"] == 2 and payload["held_in_doubt"] == 1
    audit = orjson.loads(ws.cli("audit", "--run", later, "--format", "json").stdout)
    assert sorted((row["state"], row["reason"]) for row in audit) == [
        ("in_doubt", "outcome_unknown"),
        ("skipped", "cancelled"),
        ("skipped", "cancelled"),
    ]
    with ws.db() as conn:
        (event,) = conn.execute("SELECT kind, detail FROM audit_events WHERE subject=?", (later,)).fetchall()
    assert event["kind"] == "run_cancelled" and orjson.loads(event["detail"])["skipped"] == 2
    assert _runs(ws)[later]["state"] == "cancelled"

    resumed = ws.cli("resume", later)
    assert resumed.exit_code == 2 and "cancelled" in _said(resumed.stderr)
    assert orjson.loads(ws.cli("resume", "--due", "--json").stdout) == {"resumed": []}
    for finished in (later, done):
        again = ws.cli("runs", "cancel", finished)
        assert again.exit_code == 2 and "nothing to cancel" in _said(again.stderr)
    unknown = ws.cli("runs", "cancel", "run_nope")
    assert unknown.exit_code == 2 and "unknown run" in _said(unknown.stderr)


def test_cancel_refuses_a_run_another_process_is_sending(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    ws.write("later.toml", campaign_toml("later", "welcome", ["inapp"], "aud.csv", send_at=_soon(3600)[0]))
    assert ws.cli("broadcast", "later.toml").exit_code == 0
    (run_id,) = _runs(ws)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        with ws.db() as conn:  # the run's lock, as a sending process holds it
            conn.execute("INSERT INTO locks VALUES (?, 'notifyctl', ?, '2026')", (f"run:{run_id}", holder.pid))
        refused = ws.cli("runs", "cancel", run_id)
        assert refused.exit_code == 2
        assert f"process {holder.pid}" in _said(refused.stderr) and "stop it first" in _said(refused.stderr)
        assert _runs(ws)[run_id]["state"] == "scheduled"
    finally:
        holder.kill()
        holder.wait()
    assert ws.cli("runs", "cancel", run_id).exit_code == 0  # its holder is gone


def test_doctor_checks_the_folders_it_vouches_for(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    ws.write("later.toml", campaign_toml("later", "welcome", ["inapp"], "aud.csv", send_at=_soon(1)[0]))
    assert ws.cli("broadcast", "later.toml").exit_code == 0
    time.sleep(2.2)
    doctor = ws.cli("doctor", "--offline", "--json")
    assert doctor.exit_code == 1
    messages = [check["message"] for check in orjson.loads(doctor.stdout)["checks"]]
    assert any("outbox path" in m and "users.csv, a file" in m for m in messages), messages
    assert any("was scheduled for" in m and "resume --due" in m for m in messages), messages

    folder = tmp_path / "db"
    folder.mkdir()
    ws.config.write_text(ws.config.read_text().replace('database = "notifyctl.db"', 'database = "db/n.db"'))
    _read_only(folder)
    try:
        doctor = ws.cli("doctor", "--offline", "--json")
    finally:
        _writable_again(folder)
    assert doctor.exit_code == 1
    problems = [c["message"] for c in orjson.loads(doctor.stdout)["checks"] if c["status"] == "fail"]
    assert any(f"folder {folder} is not writable" in m for m in problems), problems


def _read_only(folder: Path) -> None:
    """A folder nobody can write in, root included (an immutable folder: root ignores the mode bits)."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)


def _writable_again(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)
