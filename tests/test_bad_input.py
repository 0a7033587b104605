"""Bad input is a clear error naming the line, field or flag, exit 2, and nothing is written."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.workspace import Workspace, campaign_toml, make_workspace

LONG_LOCAL = "a" * 65  # RFC 5321: at most 64 octets before the @-sign; email-validator accepts more


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = make_workspace(tmp_path)
    workspace.write("users.csv", "user_id,email,phone\nu1,ada@example.com,+1 415 555 2671\nu2,grace@example.com,\n")
    assert workspace.cli("users", "import", "users.csv").exit_code == 0
    return workspace


def said(result: Any) -> str:
    """What a command wrote to stderr, as one line (Rich wraps long ones)."""
    return " ".join(str(result.stderr).split())


def count(ws: Workspace, table: str) -> int:
    with ws.db() as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --- audiences -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("aud.csv", "user_id,first_name\n", id="csv-header-only"),
        pytest.param("aud.csv", "user_id,first_name\r\n\r\n  ,  \r\n", id="csv-header-and-blank-lines"),
        pytest.param("aud.jsonl", "\n", id="jsonl-no-object"),
    ],
)
def test_an_audience_with_no_rows_is_refused_not_an_empty_completed_run(ws: Workspace, name: str, content: str) -> None:
    ws.write(name, content)
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], name))

    result = ws.cli("broadcast", "c.toml")

    assert result.exit_code == 2
    assert f"{name}: the audience has no rows" in said(result) and "nothing was sent" in said(result)
    assert count(ws, "runs") == 0 and count(ws, "deliveries") == 0


def test_an_audience_with_no_valid_row_is_refused_even_when_invalid_rows_are_skipped(ws: Workspace) -> None:
    ws.write("aud.csv", "user_id,email\n,nope\n")
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], "aud.csv"))

    result = ws.cli("broadcast", "c.toml", "--skip-invalid")

    assert result.exit_code == 2
    assert "no valid row in the audience" in said(result) and "line 2, field 'email'" in said(result)
    assert count(ws, "runs") == 0


# --- email addresses: RFC 5321's 64 octets before the @-sign ------------------------------------------


def test_an_email_whose_local_part_is_over_64_octets_is_refused_at_import(ws: Workspace) -> None:
    ws.write("more.csv", f"user_id,email\nu3,{'b' * 64}@example.com\nu4,{LONG_LOCAL}@example.com\n")

    result = ws.cli("users", "import", "more.csv")

    assert result.exit_code == 2
    assert "line 3, field 'email': invalid email address: the part before the @-sign is 65 octets" in said(result)
    assert count(ws, "users") == 2


def test_an_audience_email_whose_local_part_is_over_64_octets_is_refused(ws: Workspace) -> None:
    ws.write("aud.jsonl", orjson.dumps({"email": f"{LONG_LOCAL}@example.com"}).decode() + "\n")
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], "aud.jsonl"))

    result = ws.cli("broadcast", "c.toml")

    assert result.exit_code == 2
    assert "line 1, field 'email'" in said(result) and "65 octets" in said(result)
    assert count(ws, "runs") == 0


# --- flags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("--channel", "email", "--category", "marketting"),
            "--category: 'marketting' is not a defined category (defined: marketing, security, transactional;",
            id="undefined-category",
        ),
        pytest.param(
            ("--channel", "fax", "--category", "marketing"),
            "--channel: unknown channel 'fax' (known: email, sms, push, inapp, webhook)",
            id="unknown-channel",
        ),
    ],
)
def test_prefs_set_refuses_an_undefined_category_or_an_unknown_channel(
    ws: Workspace, args: tuple[str, ...], message: str
) -> None:
    result = ws.cli("prefs", "set", "u1", *args, "--off")

    assert result.exit_code == 2
    assert message in said(result)
    assert count(ws, "preferences") == 0


def test_prefs_set_takes_a_category_of_the_settings_or_the_wildcard(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, extra="[categories.digest]\nkind = 'marketing'\npriority = 'low'\n")
    ws.write("users.csv", "user_id,email\nu1,ada@example.com\n")
    assert ws.cli("users", "import", "users.csv").exit_code == 0

    assert ws.cli("prefs", "set", "u1", "--channel", "email", "--category", "digest", "--off").exit_code == 0
    assert ws.cli("prefs", "set", "u1", "--channel", "email", "--category", "*", "--off").exit_code == 0
    # Configured categories merge with the built-in ones (marketing is still defined, issue 16.3).
    assert ws.cli("prefs", "set", "u1", "--channel", "email", "--category", "marketing", "--off").exit_code == 0
    refused = ws.cli("prefs", "set", "u1", "--channel", "email", "--category", "newsletter", "--off")
    assert refused.exit_code == 2 and "digest" in said(refused) and "marketing" in said(refused), said(refused)
    assert count(ws, "preferences") == 3


def test_suppress_add_refuses_an_unknown_channel(ws: Workspace) -> None:
    result = ws.cli("suppress", "add", "fax", "+1 415 555 2671")

    assert result.exit_code == 2
    assert "--channel: unknown channel 'fax'" in said(result)
    assert count(ws, "suppressions") == 0


def test_audit_refuses_an_unknown_status(ws: Workspace) -> None:
    result = ws.cli("audit", "--status", "failed")

    assert result.exit_code == 2
    assert "--status: unknown state 'failed' (known: pending, inflight, sent, skipped, deferred, dead, in_doubt)" in (
        said(result)
    )


@pytest.mark.parametrize("log_file", [False, True], ids=["no-log-file", "with-log-file"])
def test_an_unknown_log_level_is_refused(ws: Workspace, log_file: bool) -> None:
    extra = ["--log-file", str(ws.root / "log.jsonl")] if log_file else []

    result = ws.run(*extra, "--log-level", "verbose", "suppress", "add", "email", "x@example.com")

    assert result.returncode == 2, result.stderr
    assert "unknown log level 'verbose' (known: debug, info, warning, error)" in said(result)
    assert count(ws, "suppressions") == 0
    assert ws.run("--log-level", "WARNING", "suppress", "list").returncode == 0


def test_nothing_was_written_by_a_refused_command(ws: Workspace) -> None:
    ws.cli("prefs", "set", "u1", "--channel", "email", "--category", "nope", "--off")
    ws.cli("suppress", "add", "carrier-pigeon", "u1")
    with sqlite3.connect(ws.db_path) as conn:
        kinds = [row[0] for row in conn.execute("SELECT kind FROM audit_events ORDER BY id")]
    assert kinds == ["users_import"]
