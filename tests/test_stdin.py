"""Issue 17.7: `-` reads standard input wherever a file is read; the copies kept for a run live
under the state directory until the run has planned its input, never in the working directory."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from tests.webhook_sink import WebhookSink
from tests.workspace import Workspace, audience_csv, campaign_toml, make_workspace, users_csv


def spool(ws: Workspace) -> list[Path]:
    """The copies of standard input kept under the state directory."""
    return sorted((ws.root / "notifyctl-state" / "spool").glob("*"))


def nothing_spooled_in_the_working_directory(ws: Workspace) -> None:
    assert not (ws.root / "spool").exists()
    assert not [p for p in ws.root.iterdir() if p.name.startswith("notifyctl-stdin")]


def test_users_import_reads_stdin(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    result = ws.run_stdin(users_csv(3), "users", "import", "-")
    assert result.returncode == 0, result.stderr
    assert "imported 3 user(s) from standard input" in result.stdout
    assert ws.cli("users", "show", "u3").exit_code == 0
    assert spool(ws) == []
    nothing_spooled_in_the_working_directory(ws)


def test_users_import_of_bad_stdin_writes_nothing_and_keeps_no_copy(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    result = ws.run_stdin("user_id,email\nu1,not-an-email\n", "users", "import", "-")
    assert result.returncode == 2
    assert "line 2" in result.stderr
    assert spool(ws) == []


def test_send_data_from_stdin(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(1))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    result = ws.run_stdin(
        '{"product_name": "Acme from stdin"}', "send", "-t", "welcome", "-u", "u1", "--channel", "inapp",
        "--data", "@-", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with ws.db() as conn:
        (body,) = conn.execute("SELECT body FROM inbox").fetchone()
    assert "Acme from stdin" in body


def test_broadcast_audience_and_campaign_from_stdin(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(4))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    ws.write("c.toml", campaign_toml("c1", "welcome", ["inapp"], "nowhere.csv"))

    result = ws.run_stdin(audience_csv(4), "broadcast", "c.toml", "--audience", "-", "--json")
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["counts"] == {"inapp": {"sent": 4}}
    assert spool(ws) == []  # planned to the end: the copy is gone
    nothing_spooled_in_the_working_directory(ws)

    ws.write("aud2.csv", audience_csv(2))
    result = ws.run_stdin(campaign_toml("c2", "welcome", ["inapp"], "aud2.csv"), "broadcast", "-", "--json")
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["counts"] == {"inapp": {"sent": 2}}

    both = ws.run_stdin("", "broadcast", "-", "--audience", "-")
    assert both.returncode == 2 and "cannot both be standard input" in both.stderr


def test_templates_check_audience_from_stdin(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    fits = ws.run_stdin("user_id,first_name\nu1,Ada\n", "templates", "check", "welcome", "--audience", "-",
                        "--data", '{"product_name": "A"}')  # fmt: skip
    assert fits.returncode == 0, fits.stderr
    short = ws.run_stdin("user_id\nu1\n", "templates", "check", "welcome", "--audience", "-")
    assert short.returncode == 2 and "product_name" in short.stderr


def test_templates_render_data_from_stdin(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    result = ws.run_stdin(
        '{"product_name": "Stdin Cloud", "first_name": "Ada"}', "templates", "render", "welcome", "--channel", "inapp",
        "--data", "@-", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Stdin Cloud" in result.stdout


def test_a_scheduled_run_keeps_its_stdin_copy_in_the_state_directory_until_it_is_planned(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(3))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    send_at = later.isoformat()
    ws.write("c.toml", campaign_toml("later", "welcome", ["inapp"], "x.csv", send_at=send_at))
    scheduled = ws.run_stdin(audience_csv(3), "broadcast", "c.toml", "--audience", "-", "--json")
    assert scheduled.returncode == 0, scheduled.stderr
    assert orjson.loads(scheduled.stdout)["state"] == "scheduled"
    kept = spool(ws)
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o077 == 0  # private: it holds personal data
    nothing_spooled_in_the_working_directory(ws)

    time.sleep(max(0.0, (later - datetime.now(UTC)).total_seconds()) + 0.5)
    due = ws.run("resume", "--due", "--json")
    assert due.returncode == 0, due.stderr
    assert orjson.loads(due.stdout)["resumed"][0]["counts"] == {"inapp": {"sent": 3}}
    assert spool(ws) == []


def test_events_from_stdin_resume_after_kill_9_then_the_copy_goes(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    n = 200
    ws = make_workspace(tmp_path, webhook={"rate": 40, "burst": 5})
    ws.write("users.csv", users_csv(n, webhook_url=webhook_sink.url()))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    events = "".join(
        orjson.dumps(
            {"event_id": f"e{i}", "user_id": f"u{i}", "template": "welcome", "channels": ["webhook"],
             "data": {"product_name": "Acme"}}
        ).decode() + "\n"
        for i in range(1, n + 1)
    )  # fmt: skip
    proc = ws.popen("send", "--events", "-", "--json", stdin=-1)
    assert proc.stdin is not None
    proc.stdin.write(events.encode())
    proc.stdin.close()
    deadline = time.monotonic() + 30
    while len(webhook_sink.requests) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        assert pipe is not None
        pipe.close()
    assert len(spool(ws)) == 1  # resume needs it (or will release it)
    nothing_spooled_in_the_working_directory(ws)

    resumed = ws.run("resume", "--due", "--json")
    assert resumed.returncode in (0, 1), resumed.stderr
    assert spool(ws) == []
    assert ws.states() == {"sent": n}  # webhooks in doubt are re-sent with their webhook-id
    assert len({r.webhook_id for r in webhook_sink.requests}) == n
