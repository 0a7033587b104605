"""Output for people and for scripts (issue 17.6), through the real CLI, piped (not a terminal)
with COLUMNS set: ids never cut, one rule for piped output, audit exports everything streamed,
a one-off send says what happened to each delivery, progress at 60 columns, raw SMS text."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from notifyctl.templates.segments import sms_size
from tests.unreachable import closed_port
from tests.workspace import Workspace, audience_csv, campaign_toml, make_workspace, users_csv

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run(ws: Workspace, *args: str, columns: int = 80, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process, stdout and stderr piped, the terminal width in COLUMNS."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TTY_COMPATIBLE", "FORCE_COLOR")}
    environ.update(NOTIFYCTL_CONFIG=str(ws.config), COLUMNS=str(columns), **env)
    command = [sys.executable, "-m", "notifyctl.cli", *args]
    return subprocess.run(command, cwd=ws.root, env=environ, capture_output=True, text=True, timeout=300)


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(3))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    return ws


def send_welcome(ws: Workspace, *extra: str) -> subprocess.CompletedProcess[str]:
    data = '{"product_name": "Acme"}'
    return run(ws, "send", "-t", "welcome", "-u", "u1", "--data", data, *extra, columns=120)


# --- ids are never cut; other columns wrap; one line per dead letter -------------------------------


def test_ids_are_whole_at_60_and_120_columns_and_other_columns_wrap(ws: Workspace) -> None:
    ws.write("aud.csv", audience_csv(3))
    ws.write("c.toml", campaign_toml("spring-newsletter-for-every-customer-2026", "welcome", ["inapp"], "aud.csv"))
    assert ws.cli("broadcast", "c.toml", "--json").exit_code == 0
    assert send_welcome(ws, "--channel", "inapp", "--json").returncode == 0
    run_ids = [r["run_id"] for r in orjson.loads(ws.cli("runs", "list", "--json").stdout)]
    assert len(run_ids) == 2
    for columns in (60, 120):
        listed = run(ws, "runs", "list", columns=columns)
        assert listed.returncode == 0, listed.stderr
        assert all(run_id in listed.stdout for run_id in run_ids), listed.stdout
        assert "…" not in listed.stdout  # nothing cut short: the campaign id wraps instead
        assert widest(listed.stdout) <= columns
    assert "spring-newsletter-for-every-customer-2026" in run(ws, "runs", "list", columns=200).stdout
    # at 60 columns the rows are records: every value readable, none cut
    assert "spring-newsletter-for-every-customer-2026" in run(ws, "runs", "list", columns=60).stdout
    shown = run(ws, "runs", "show", run_ids[0], columns=60)
    assert run_ids[0] in shown.stdout and widest(shown.stdout) <= 60


def test_dlq_list_gives_an_error_one_line_and_dlq_show_all_of_it(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, retry={"max_attempts": 1})
    ws.write("users.csv", users_csv(1, webhook_url=f"http://127.0.0.1:{closed_port()}/hook"))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    ws.write("aud.csv", audience_csv(1))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["webhook"], "aud.csv"))
    assert ws.cli("broadcast", "c.toml", "--json").exit_code == 1
    (dead,) = orjson.loads(ws.cli("dlq", "list", "--json").stdout)
    why = dead["error_message"]
    assert len(why) > 60, why  # "Cannot connect to host 127.0.0.1:… [Connect call failed …]"
    for columns in (80, 120):
        listed = run(ws, "dlq", "list", columns=columns)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        rule = next(i for i, line in enumerate(lines) if line.startswith("───"))
        body = [line for line in lines[rule + 1 :] if "notifyctl dlq show" not in line]
        (row,) = [line for line in body if dead["run_id"] in line]
        assert "webhook" in row and "Transient" in row and row.rstrip().endswith("…"), listed.stdout
        assert len(body) <= 2, listed.stdout  # the error on one line, cut with "…" (the time may wrap)
        assert widest(listed.stdout) <= columns and "notifyctl dlq show DELIVERY" in listed.stdout
    shown = run(ws, "dlq", "show", str(dead["delivery_id"]), columns=80)
    assert shown.returncode == 0, shown.stderr
    assert all(word in shown.stdout for word in why.split())


# --- one rule for piped output; --json on every list and show command -----------------------------


def test_piped_output_is_for_people_unless_json_is_asked_for(ws: Workspace) -> None:
    assert ws.cli("keys", "create", "mobile", "--json").exit_code == 0
    for args in (["keys", "list"], ["runs", "list"], ["templates", "list"], ["users", "show", "u1"]):
        piped = run(ws, *args)
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout.lstrip()[:1] not in ("[", "{"), (args, piped.stdout)  # a table, as on a terminal
        assert orjson.loads(run(ws, *args, "--json").stdout) is not None
    sent = send_welcome(ws, "--channel", "inapp")
    assert sent.returncode == 0 and "deliveries" in sent.stdout and not sent.stdout.startswith("{")
    as_json = orjson.loads(run(ws, "audit", "--json").stdout)
    assert as_json == orjson.loads(run(ws, "audit", "--format", "json").stdout) and len(as_json) == 1
    assert run(ws, "audit", "--json", "--format", "csv").returncode == 2


@pytest.mark.parametrize(
    "command",
    [
        "runs list",
        "runs show",
        "audit",
        "dlq list",
        "dlq show",
        "users show",
        "prefs show",
        "suppress list",
        "templates list",
        "templates render",
        "templates check",
        "keys list",
        "endpoints show",
        "cluster status",
        "doctor",
    ],
)
def test_every_list_and_show_command_takes_json(ws: Workspace, command: str) -> None:
    shown = ws.cli(*command.split(), "--help")
    assert shown.exit_code == 0 and "--json" in shown.stdout, shown.stdout


# --- audit exports everything, streamed -----------------------------------------------------------

ROWS = 150_001


def fill_deliveries(ws: Workspace, n: int) -> None:
    """n delivery rows written straight into the database (fast: no sending)."""
    with ws.db() as conn:
        conn.execute(
            """WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)
               INSERT INTO deliveries (run_id, user_id, channel, address, idempotency_key, event_id, template,
                                       template_version, category, state, message_id, created, updated)
               SELECT 'run_bulk', 'u' || i, 'email', 'user' || i || '@example.com', 'key-' || i, 'ev-' || i,
                      'welcome', 'v1', 'marketing', 'sent', 'm-' || i,
                      '2026-12-01T00:00:00.000000+00:00', '2026-12-01T00:00:00.000000+00:00'
               FROM k""",
            (n,),
        )


def peak_rss_mb(ws: Workspace, *args: str) -> tuple[int, float]:
    """Run the CLI with stdout counted line by line; (lines, the child's peak resident size in MB)."""
    probe = (
        "import resource, subprocess, sys\n"
        "child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n"
        "lines = sum(1 for _ in child.stdout)\n"
        "assert child.wait() == 0\n"
        "print(lines, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    env = {**os.environ, "NOTIFYCTL_CONFIG": str(ws.config)}
    done = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "notifyctl.cli", *args],
        cwd=ws.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines, rss = done.stdout.split()
    return int(lines), float(rss)


def test_audit_exports_every_row_streamed_and_the_table_says_what_it_leaves_out(ws: Workspace) -> None:
    fill_deliveries(ws, ROWS)
    exported = run(ws, "audit", "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == ROWS and len({r["id"] for r in rows}) == ROWS
    assert [int(r["id"]) for r in rows[:2]] == [ROWS, ROWS - 1]  # newest first unless --oldest-first
    lines, csv_rss = peak_rss_mb(ws, "audit", "--format", "csv")
    assert lines == ROWS + 1
    json_lines, json_rss = peak_rss_mb(ws, "audit", "--json")
    assert json_lines == ROWS + 2  # "[", a line per row, "]"
    small_lines, small_rss = peak_rss_mb(ws, "audit", "--json", "--limit", "10")
    assert small_lines == 12
    # flat memory: all 150,001 rows cost no more than 10 (held in a list they take hundreds of MB)
    assert max(csv_rss, json_rss) < small_rss + 40, (csv_rss, json_rss, small_rss)

    oldest = orjson.loads(run(ws, "audit", "--json", "--limit", "3", "--oldest-first").stdout)
    assert [r["id"] for r in oldest] == [1, 2, 3]
    newest = orjson.loads(run(ws, "audit", "--json", "--limit", "3", "--newest-first").stdout)
    assert [r["id"] for r in newest] == [ROWS, ROWS - 1, ROWS - 2]

    table = run(ws, "audit", columns=200)
    assert table.returncode == 0, table.stderr
    assert f"showing 50 of {ROWS}" in table.stdout and "--limit" in table.stdout
    assert f"showing 5 of {ROWS}" in run(ws, "audit", "--limit", "5", columns=200).stdout


# --- a one-off send says what happened to each delivery and why ----------------------------------


def test_send_reports_each_delivery_its_outcome_and_reason(ws: Workspace) -> None:
    first = orjson.loads(send_welcome(ws, "--channel", "inapp", "--event-id", "e1", "--json").stdout)
    (delivered,) = first["deliveries"]
    assert delivered["outcome"] == "sent" and delivered["channel"] == "inapp"

    again = send_welcome(ws, "--channel", "inapp", "--event-id", "e1", "--json")
    assert again.returncode == 0, again.stderr
    report = orjson.loads(again.stdout)
    (duplicate,) = report["deliveries"]
    assert duplicate["outcome"] == "skipped: duplicate" and duplicate["delivery_id"] != delivered["delivery_id"]
    assert report["reasons"] == {"skipped:duplicate": 1} and report["rejected_rows"] == 0

    assert ws.cli("suppress", "add", "email", "user1@example.com", "--reason", "complaint").exit_code == 0
    table = send_welcome(ws, "--channel", "email", "--channel", "inapp", "--event-id", "e2")
    assert table.returncode == 0, table.stderr
    (line,) = [line for line in table.stdout.splitlines() if "skipped: suppressed" in line]
    assert "email" in line
    ids = [d["id"] for d in orjson.loads(ws.cli("audit", "--json", "--run", run_id_of(ws)).stdout)]
    assert ids and all(str(i) in table.stdout for i in ids)
    assert "skipped:suppressed" in table.stdout  # the reasons of the run's summary


def run_id_of(ws: Workspace) -> str:
    return str(orjson.loads(ws.cli("runs", "list", "--json", "--limit", "1").stdout)[0]["run_id"])


def test_summaries_carry_the_reasons_and_the_rows_rejected(ws: Workspace) -> None:
    ws.write("aud.csv", audience_csv(3) + "u99,Nobody\n,Blank\n")
    ws.write("c.toml", campaign_toml("c1", "welcome", ["inapp"], "aud.csv"))
    report = orjson.loads(run(ws, "broadcast", "c.toml", "--skip-invalid", "--json").stdout)
    assert report["rejected_rows"] == 1
    assert report["reasons"] == {"skipped:unknown_user": 1}
    ws.write("c2.toml", campaign_toml("c2", "welcome", ["inapp"], "aud.csv"))
    table = run(ws, "broadcast", "c2.toml", "--skip-invalid", columns=120)
    assert "1 input row(s) rejected" in table.stdout and "skipped:unknown_user" in table.stdout


# --- progress --------------------------------------------------------------------------------------


def test_progress_at_60_columns_shows_totals_and_an_eta(ws: Workspace) -> None:
    ws.write("users.csv", users_csv(40))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    ws.write("aud.csv", audience_csv(40))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email", "inapp"], "aud.csv"))
    drawn = run(ws, "broadcast", "c.toml", columns=60, TTY_COMPATIBLE="1")  # stderr "is" a terminal
    assert drawn.returncode == 0, drawn.stderr
    screen = [line for line in re.split(r"[\r\n]", ANSI.sub("", drawn.stderr)) if line.strip()]
    assert screen and max(len(line) for line in screen) <= 60, screen
    final = {line.split()[0]: line for line in screen}
    for channel in ("email", "inapp"):
        assert "40/40" in final[channel] and "ETA" in final[channel], final
    assert run(ws, "runs", "list").stderr == ""  # no bars when stderr is not a terminal


# --- templates render ------------------------------------------------------------------------------


SMS = (
    "Hi {{ first_name }}, your order {{ order_id }} has shipped with {{ carrier }} and is on its way to you now. "
    "Track it here any time you like: {{ tracking_url }} Reply STOP to opt out of these messages."
)


@pytest.mark.parametrize(
    ("name", "extra", "encoding", "segments"),
    [
        pytest.param("gsm", "", "GSM-7", 2, id="gsm7-two-segments"),
        pytest.param("ucs2", " Merci ✓", "UCS-2", 3, id="one-ucs2-char-makes-it-ucs2"),
    ],
)
def test_templates_render_prints_raw_sms_text_with_segments_and_encoding(
    ws: Workspace, name: str, extra: str, encoding: str, segments: int
) -> None:
    ws.write(f"templates/{name}/manifest.toml", 'category = "transactional"\nchannels = ["sms"]\n')
    ws.write(f"templates/{name}/sms/text.j2", SMS + extra)
    data = '{"first_name": "Ada", "order_id": "A-1", "carrier": "UPS", "tracking_url": "https://t.example/A-1"}'
    piped = run(ws, "templates", "render", name, "--channel", "sms", "--data", data, columns=80)
    assert piped.returncode == 0, piped.stderr
    text = piped.stdout.removesuffix("\n")
    assert "\n" not in text and len(text) > 160  # raw: not wrapped at 80 columns
    assert text.startswith("Hi Ada, your order A-1") and text.endswith(extra or "messages.")
    size = sms_size(text)
    assert (size.encoding, size.segments) == (encoding, segments)
    assert f"{segments} segment(s), {encoding}" in piped.stderr
    shown = orjson.loads(run(ws, "templates", "render", name, "--channel", "sms", "--data", data, "--json").stdout)
    assert shown["text"] == text and shown["sms"]["encoding"] == encoding and shown["sms"]["segments"] == segments


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        pytest.param("", "GSM-7", 0, 0, id="empty"),
        pytest.param("a" * 160, "GSM-7", 160, 1, id="gsm7-160-fits-one"),
        pytest.param("a" * 161, "GSM-7", 161, 2, id="gsm7-161-splits-at-153"),
        pytest.param("a" * 307, "GSM-7", 307, 3, id="gsm7-307-three"),
        pytest.param("€" * 80, "GSM-7", 160, 1, id="extension-chars-take-two-septets"),
        pytest.param("a" + "{" * 76 + "}", "GSM-7", 155, 1, id="extension-under-160"),
        pytest.param("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2, id="escape-pair-never-split"),
        pytest.param("Ça coûte 5 €", "UCS-2", 12, 1, id="accent-outside-gsm7"),
        pytest.param("é" * 160, "GSM-7", 160, 1, id="basic-table-accents"),
        pytest.param("ç" * 70, "UCS-2", 70, 1, id="ucs2-70-fits-one"),
        pytest.param("ç" * 71, "UCS-2", 71, 2, id="ucs2-71-splits-at-67"),
        pytest.param("😀" * 35, "UCS-2", 70, 1, id="emoji-two-units"),
        pytest.param("😀" * 34 + "a", "UCS-2", 69, 1, id="emoji-fit"),
        pytest.param("a" * 66 + "😀" + "a" * 10, "UCS-2", 78, 2, id="surrogate-pair-never-split"),
    ],
)
def test_sms_size(text: str, encoding: str, units: int, segments: int) -> None:
    size = sms_size(text)
    assert (size.encoding, size.units, size.segments) == (encoding, units, segments)
