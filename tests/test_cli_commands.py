"""Each directory, template and inspection command through the CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest

from tests.workspace import Workspace, audience_csv, campaign_toml, make_workspace, users_csv


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = make_workspace(tmp_path)
    workspace.write(
        "users.csv",
        "user_id,email,phone,locale,timezone,push_tokens,first_name,plan\n"
        "u1,Ada@Example.com,+1 415 555 2671,en,America/Los_Angeles,tokA|tokB,Ada,pro\n"
        "u2,grace@example.com,,fr-CA,,,Grace,free\n",
    )
    assert workspace.cli("users", "import", "users.csv").exit_code == 0
    return workspace


def test_users_show_normalises_addresses_and_keeps_attributes(ws: Workspace) -> None:
    user = orjson.loads(ws.cli("users", "show", "u1", "--json").stdout)
    assert user["email"] == "ada@example.com"
    assert user["phone"] == "+14155552671"
    assert user["push_tokens"] == ["tokA", "tokB"]
    assert user["attributes"] == {"first_name": "Ada", "plan": "pro"}
    assert ws.cli("users", "show", "nobody").exit_code == 2


def test_users_import_reports_rejected_rows_and_writes_nothing(ws: Workspace) -> None:
    ws.write("bad.csv", "user_id,email,phone\nu9,ok@example.com,\nu10,nope,\nu11,,+99 1\n")
    result = ws.cli("users", "import", "bad.csv")
    assert result.exit_code == 2
    assert "line 3" in result.stderr and "line 4" in result.stderr
    assert ws.cli("users", "show", "u9").exit_code == 2  # nothing half-written
    partial = ws.cli("users", "import", "bad.csv", "--skip-invalid", "--json")
    assert partial.exit_code == 1
    assert orjson.loads(partial.stdout)["imported"] == 1


def test_prefs_set_and_show(ws: Workspace) -> None:
    assert ws.cli("prefs", "set", "u1", "--channel", "sms", "--category", "marketing", "--on").exit_code == 0
    assert ws.cli("prefs", "set", "u1", "--channel", "email", "--category", "*", "--off").exit_code == 0
    prefs = orjson.loads(ws.cli("prefs", "show", "u1", "--json").stdout)
    assert {(p["channel"], p["category"], p["enabled"]) for p in prefs} == {("sms", "marketing", 1), ("email", "*", 0)}
    assert ws.cli("prefs", "set", "u1", "--channel", "fax", "--category", "x", "--off").exit_code == 2
    assert ws.cli("prefs", "set", "nobody", "--channel", "sms", "--category", "x", "--off").exit_code == 2


def test_suppressions_are_normalised_before_compare(ws: Workspace) -> None:
    assert ws.cli("suppress", "add", "email", " ADA@example.COM ", "--reason", "complaint").exit_code == 0
    assert ws.cli("suppress", "add", "sms", "+1 (415) 555-2671", "--reason", "stop").exit_code == 0
    listed = orjson.loads(ws.cli("suppress", "list", "--json").stdout)
    assert {(s["channel"], s["address"], s["reason"]) for s in listed} == {
        ("email", "ada@example.com", "complaint"),
        ("sms", "+14155552671", "stop"),
    }
    assert ws.cli("suppress", "add", "email", "x@example.com", "--reason", "whim").exit_code == 2
    assert ws.cli("suppress", "remove", "email", "Ada@Example.com").exit_code == 0
    assert ws.cli("suppress", "remove", "email", "Ada@Example.com").exit_code == 2  # not found
    ws.write("aud.csv", audience_csv(2))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], "aud.csv"))
    ws.cli("suppress", "add", "email", "Grace@example.com", "--reason", "manual")
    result = orjson.loads(ws.cli("broadcast", "c.toml", "--json").stdout)
    assert result["counts"]["email"] == {"sent": 1, "skipped": 1}
    audit = orjson.loads(ws.cli("audit", "--status", "skipped", "--format", "json").stdout)
    assert audit[0]["reason"] == "suppressed:manual"


def test_templates_list_render_check(ws: Workspace) -> None:
    listed = orjson.loads(ws.cli("templates", "list", "--json").stdout)
    assert {t["name"] for t in listed} == {"welcome", "order_shipped"}
    ws.write("order.json", '{"first_name": "Jean", "order_id": "A-1", "carrier": "UPS", "tracking_url": "https://t/1"}')
    fr_ca = orjson.loads(
        ws.cli(
            "templates",
            "render",
            "order_shipped",
            "--channel",
            "sms",
            "--locale",
            "fr-CA",
            "--data",
            "@order.json",
            "--json",
        ).stdout
    )
    fr = orjson.loads(
        ws.cli(
            "templates",
            "render",
            "order_shipped",
            "--channel",
            "email",
            "--locale",
            "fr",
            "--data",
            "@order.json",
            "--json",
        ).stdout
    )
    assert "A-1" in fr_ca["text"] and "A-1" in fr["subject"]
    ws.write("aud.csv", "user_id\nu1\n")
    # first_name is a user attribute, product_name campaign data
    assert (
        ws.cli("templates", "check", "welcome", "--audience", "aud.csv", "--data", '{"product_name": "A"}').exit_code
        == 0
    )
    missing = ws.cli("templates", "check", "welcome", "--audience", "aud.csv")
    assert missing.exit_code == 2 and "product_name" in missing.stderr
    ws.write("aud2.csv", "user_id\nu1\n")
    bad = ws.cli("templates", "check", "order_shipped", "--audience", "aud2.csv")
    assert bad.exit_code == 2 and "order_id" in bad.stderr
    escape = ws.cli("templates", "render", "nope", "--channel", "email")
    assert escape.exit_code == 2 and "unknown template" in escape.stderr


def test_runs_and_audit_formats(ws: Workspace) -> None:
    ws.write("aud.csv", audience_csv(2))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email", "inapp"], "aud.csv"))
    run_id = orjson.loads(ws.cli("broadcast", "c.toml", "--json").stdout)["run_id"]
    runs = orjson.loads(ws.cli("runs", "list", "--json").stdout)
    assert runs[0]["run_id"] == run_id and runs[0]["state"] == "completed"
    details = orjson.loads(ws.cli("runs", "show", run_id, "--json").stdout)
    assert details["counts"] == {"email": {"sent": 2}, "inapp": {"sent": 2}}
    assert details["provider_requests"] == 4
    rows = list(csv.DictReader(io.StringIO(ws.cli("audit", "--run", run_id, "--format", "csv").stdout)))
    assert len(rows) == 4 and {r["state"] for r in rows} == {"sent"}
    assert all(r["template_version"] and r["attempts"] == "1" for r in rows)
    redacted = orjson.loads(ws.cli("audit", "--format", "json", "--redact").stdout)
    assert all("ada@example.com" not in (r["address"] or "") for r in redacted)
    assert any(r["address"] == "a***@example.com" for r in redacted)
    assert ws.cli("audit", "--format", "xml").exit_code == 2
    assert ws.cli("runs", "show", "nope").exit_code == 2


def test_audit_csv_escapes_formula_cells(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(1))
    ws.cli("users", "import", "users.csv")
    ws.write("order.json", '{"first_name": "=HYPERLINK(1)", "order_id": "1", "carrier": "x", "tracking_url": "y"}')
    ws.cli(
        "send",
        "-t",
        "order_shipped",
        "-u",
        "u1",
        "--channel",
        "inapp",
        "--data",
        "@order.json",
        "--event-id",
        "=cmd|' /C calc'!A0",
    )
    out = ws.cli("audit", "--format", "csv").stdout
    assert ",=cmd" not in out and "'=cmd" in out


def test_version_prints_the_version_without_a_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    from notifyctl import __version__

    done = subprocess.run(
        [sys.executable, "-m", "notifyctl.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __version__
