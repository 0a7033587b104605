"""End to end through the CLI: the README's example, webhooks through a verifying sink, bad input."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from notifyctl.security.unsubscribe import read_token
from tests.webhook_sink import WebhookSink
from tests.workspace import REPO, audience_csv, campaign_toml, make_workspace, users_csv


def test_readme_example_broadcast_runs_as_a_new_user_would(tmp_path: Path) -> None:
    """The README's first set-up commands: `notifyctl init` in an empty directory, then the example."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYCTL_")}
    cmd = [sys.executable, "-m", "notifyctl.cli"]
    initialized = subprocess.run([*cmd, "init"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert initialized.returncode == 0, initialized.stderr
    imported = subprocess.run(
        [*cmd, "users", "import", "campaigns/example-users.csv"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr
    result = subprocess.run(
        [*cmd, "broadcast", "campaigns/welcome.toml", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["state"] == "completed"
    assert summary["counts"]["email"] == {"sent": 5}
    assert summary["counts"]["inapp"] == {"sent": 5}

    emls = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(emls) == 5
    message = email.message_from_bytes(emls[0].read_bytes(), policy=email.policy.default)
    # No public_url yet: the link leads to `notifyctl serve` on this machine (fine for the outbox), and
    # is signed with the installation's own random secret, made with its database.
    link = str(message["List-Unsubscribe"])
    assert link.startswith("<http://127.0.0.1:8080/u/") and link.endswith(">")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    kinds = {part.get_content_type() for part in message.walk()}
    assert {"text/plain", "text/html"} <= kinds

    conn = sqlite3.connect(tmp_path / "notifyctl.db")
    (secret,) = conn.execute("SELECT secret FROM installation_secrets WHERE retired IS NULL").fetchone()
    token = link.removeprefix("<http://127.0.0.1:8080/u/").removesuffix(">")
    fields = read_token([secret], token)
    assert len(secret) >= 40 and fields is not None and fields[1:] == ("email", "marketing")
    assert read_token(["change-me-unsubscribe-secret"], token) is None
    assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 5
    audit = dict(conn.execute("SELECT state || ':' || COALESCE(reason, ''), count(*) FROM deliveries GROUP BY 1"))
    assert audit == {"sent:": 10}  # the example campaign is email and in-app only
    versions = {v for (v,) in conn.execute("SELECT DISTINCT template_version FROM deliveries")}
    assert len(versions) == 1 and len(versions.pop()) == 16
    assert oct((tmp_path / "notifyctl.db").stat().st_mode & 0o777) == "0o600"


def test_webhook_broadcast_is_signed_and_verified_by_the_official_library(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(40, webhook_url=webhook_sink.url()))
    ws.write("aud.csv", audience_csv(40))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["webhook"], "aud.csv"))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    result = ws.cli("broadcast", "c.toml", "--json")
    assert result.exit_code == 0, result.output
    requests = webhook_sink.requests
    assert len(requests) == 40
    assert all(r.verified for r in requests)
    with ws.db() as conn:
        ids = {row[0] for row in conn.execute("SELECT message_id FROM deliveries WHERE state='sent'")}
    assert {r.webhook_id for r in requests} == ids
    body = orjson.loads(requests[0].body)
    assert body["type"] == "user.welcome"


def test_the_same_campaign_twice_sends_nothing_new(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(10, webhook_url=webhook_sink.url()))
    ws.write("aud.csv", audience_csv(10))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["webhook", "inapp"], "aud.csv"))
    ws.cli("users", "import", "users.csv")
    assert ws.cli("broadcast", "c.toml").exit_code == 0
    second = ws.cli("broadcast", "c.toml", "--json")
    assert second.exit_code == 0
    summary = orjson.loads(second.stdout)
    assert summary["counts"] == {"webhook": {"skipped": 10}, "inapp": {"skipped": 10}}
    assert len(webhook_sink.requests) == 10
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 10
        reasons = {
            r for (r,) in conn.execute("SELECT DISTINCT reason FROM deliveries WHERE run_id=?", (summary["run_id"],))
        }
    assert reasons == {"duplicate"}


BAD_AUDIENCE = (
    b"user_id,email,phone,first_name\n"
    b"u1,ok@example.com,,Ada\n"
    b"u2,not-an-email,,Bob\n"
    b"u3,,+1 nope,Cy\n"
    b"u4,d\xff@example.com,,Di\n"
    b",,,Nobody\n"
    b"u1,ok@example.com,,Ada again\n"
    b"u6,six@example.com,,Six\n"
)


def test_bad_audience_is_reported_with_line_numbers_and_nothing_is_written(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(6))
    ws.root.joinpath("aud.csv").write_bytes(BAD_AUDIENCE)
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email", "inapp"], "aud.csv"))
    ws.cli("users", "import", "users.csv")
    result = ws.cli("broadcast", "c.toml")
    assert result.exit_code == 2
    for line in (3, 4, 5, 6, 7):
        assert f"line {line}" in result.stderr
    assert "UTF-8" in result.stderr or "utf-8" in result.stderr
    assert "duplicate" in result.stderr
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
    assert not (ws.root / "outbox").exists() or not list((ws.root / "outbox").iterdir())

    skipped = ws.cli("broadcast", "c.toml", "--skip-invalid", "--json")
    assert skipped.exit_code == 0, skipped.output
    assert orjson.loads(skipped.stdout)["counts"]["email"] == {"sent": 2}
    run_id = orjson.loads(skipped.stdout)["run_id"]
    details = orjson.loads(ws.cli("runs", "show", run_id, "--json").stdout)
    assert details["rejected_rows"] == 5


def test_template_variable_missing_from_audience_fails_before_any_send(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", "user_id,email\nu1,a@example.com\n")
    ws.write("aud.csv", "user_id\nu1\n")
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], "aud.csv"))
    ws.cli("users", "import", "users.csv")
    result = ws.cli("broadcast", "c.toml")
    assert result.exit_code == 2
    assert "first_name" in result.stderr
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0


def test_dry_run_decides_but_records_nothing(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(5))
    ws.write("aud.csv", audience_csv(5))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email", "webhook"], "aud.csv"))
    ws.cli("users", "import", "users.csv")
    ws.cli("prefs", "set", "u2", "--channel", "email", "--category", "marketing", "--off")
    result = ws.cli("broadcast", "c.toml", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["counts"]["email"] == {"pending": 4, "skipped": 1}
    assert report["reasons"]["skipped:preference_off"] == 1
    assert report["reasons"]["skipped:no_address"] == 5
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_send_one_notification_and_events_stream(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(3, webhook_url=webhook_sink.url()))
    ws.cli("users", "import", "users.csv")
    data = '{"first_name": "Ada", "order_id": "A-1", "carrier": "UPS", "tracking_url": "https://t.example/1"}'
    result = ws.cli(
        "send",
        "-t",
        "order_shipped",
        "-u",
        "u1",
        "--channel",
        "email",
        "--channel",
        "webhook",
        "--data",
        data,
        "--event-id",
        "order-A-1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["counts"] == {"email": {"sent": 1}, "webhook": {"sent": 1}}
    again = ws.cli(
        "send",
        "-t",
        "order_shipped",
        "-u",
        "u1",
        "--channel",
        "email",
        "--data",
        data,
        "--event-id",
        "order-A-1",
        "--json",
    )
    assert orjson.loads(again.stdout)["counts"] == {"email": {"skipped": 1}}

    events = "\n".join(
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "user_id": f"u{i}",
                "template": "order_shipped",
                "channels": ["inapp"],
                "data": orjson.loads(data),
            }
        ).decode()
        for i in (1, 2, 3)
    )
    streamed = ws.cli("send", "--events", "-", "--json", input=events + "\n")
    assert streamed.exit_code == 0, streamed.output
    assert orjson.loads(streamed.stdout)["counts"] == {"inapp": {"sent": 3}}

    unknown = ws.cli("send", "-t", "order_shipped", "-u", "nobody", "--data", data)
    assert unknown.exit_code == 2 and "unknown user" in unknown.stderr
    missing_var = ws.cli("send", "-t", "order_shipped", "-u", "u1", "--channel", "email")
    assert missing_var.exit_code == 2 and "order_id" in missing_var.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param('[providers.x]\ntype="outbox"\nrate="fast"\n', "providers.x.rate", id="bad-rate"),
        pytest.param('[channels]\nemail = "nope"\n', "nope", id="unknown-provider"),
        pytest.param("this is not toml", "not valid TOML", id="not-toml"),
        pytest.param(
            '[providers.x]\ntype = "carrier-pigeon"\n[channels]\nemail = "x"\n', "carrier-pigeon", id="unknown-type"
        ),
    ],
)
def test_bad_configuration_names_the_key_and_file(tmp_path: Path, config: str, message: str) -> None:
    (tmp_path / "notifyctl.toml").write_text(config)
    (tmp_path / "c.toml").write_text(campaign_toml("c1", "welcome", ["email"], "a.csv"))
    (tmp_path / "a.csv").write_text("user_id\nu1\n")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "notifyctl.cli",
            "--config",
            str(tmp_path / "notifyctl.toml"),
            "broadcast",
            "c.toml",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "notifyctl.toml" in result.stderr or message == "carrier-pigeon"


def test_env_override(tmp_path: Path) -> None:
    from notifyctl.settings import load_settings

    (tmp_path / "notifyctl.toml").write_text('[providers.w]\ntype = "webhook"\nrate = 10\n[channels]\nwebhook = "w"\n')
    settings = load_settings(
        tmp_path / "notifyctl.toml", {"NOTIFYCTL_PROVIDERS__W__RATE": "25", "NOTIFYCTL_DATABASE": "other.db"}
    )
    assert settings.providers["w"].rate == 25
    assert settings.database_path == tmp_path / "other.db"
