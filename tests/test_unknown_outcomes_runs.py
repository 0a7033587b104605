"""Unknown outcomes in whole runs: a request the provider took and then never answered is in doubt,
never retried as if nothing was sent. Re-sent where the receiver dedupes (webhooks, same webhook-id),
held for the operator elsewhere (Twilio, SMTP), unless `in_doubt = "resend"`; a request that never
left (a refused connection) is retried and ends dead. Through the CLI, against the local fakes.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from tests.fakes import process_then_stall
from tests.fakes.smtp import ACCEPT_THEN_DROP, FakeSmtp
from tests.fakes.twilio import FakeTwilio
from tests.unreachable import closed_port
from tests.webhook_sink import SINK_SECRET, ReceivedRequest, WebhookSink, respond, stall
from tests.workspace import Workspace, audience_csv, campaign_toml, make_workspace

TIMEOUT_S = 0.5
MAX_ATTEMPTS = 4  # tests.workspace's retry setting


def test_webhooks_that_processed_then_stalled_are_resent_with_the_same_id(
    tmp_path: Path, webhook_sink: WebhookSink
) -> None:
    n = 300
    stalling = {f"u{i}" for i in (7, 50, 123, 250)}  # take the webhook, then answer too late (once)
    gone = {f"u{i}" for i in (11, 200)}  # nothing listens at their endpoint: never sent
    dead_port = closed_port()

    def answered_late_once(request: ReceivedRequest, count: int) -> None:
        if request.path.lstrip("/") in stalling:
            webhook_sink.on_path(request.path, respond(200))  # its re-send is answered at once

    for user in stalling:
        webhook_sink.on_path(f"/{user}", stall(TIMEOUT_S + 2))
    webhook_sink.on_request(answered_late_once)
    ws = make_workspace(tmp_path, webhook={"timeout_s": TIMEOUT_S})
    rows = ["user_id,email,locale,first_name,webhook_url,webhook_secret"]
    for i in range(1, n + 1):
        url = f"http://127.0.0.1:{dead_port}/u{i}" if f"u{i}" in gone else webhook_sink.url(f"/u{i}")
        rows.append(f"u{i},user{i}@example.com,en,Name{i},{url},{SINK_SECRET}")
    ws.write("users.csv", "\n".join(rows) + "\n")
    ws.write("aud.csv", audience_csv(n))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["webhook"], "aud.csv"))
    assert ws.cli("users", "import", "users.csv").exit_code == 0

    result = ws.cli("broadcast", "c.toml", "--json")

    assert result.exit_code == 1, result.output  # the endpoints nobody listens at are dead
    summary = orjson.loads(result.stdout)
    assert summary["counts"] == {"webhook": {"sent": n - len(gone), "dead": len(gone)}}
    assert summary["held_in_doubt"] == 0  # webhook receivers dedupe: nothing is held
    with ws.db() as conn:
        deliveries = {
            r["user_id"]: dict(r)
            for r in conn.execute("SELECT user_id, state, in_doubt, attempts, message_id FROM deliveries")
        }
        unknown_codes = {
            r[0]
            for r in conn.execute(
                "SELECT a.code FROM attempts a JOIN deliveries d ON d.id=a.delivery_id WHERE a.outcome='in_doubt'"
            )
        }
    hits = Counter(r.path.lstrip("/") for r in webhook_sink.requests)
    ids: dict[str, set[str | None]] = {}
    for request in webhook_sink.requests:
        ids.setdefault(request.path.lstrip("/"), set()).add(request.webhook_id)
    for user in stalling:  # taken, answered too late, sent again with the same webhook-id
        assert deliveries[user]["state"] == "sent" and deliveries[user]["in_doubt"] == 1, deliveries[user]
        assert hits[user] == 2 and ids[user] == {deliveries[user]["message_id"]}
    for user in gone:  # never reached: retried as not sent, then dead, and not in doubt
        assert deliveries[user] | {"message_id": None} == {
            "user_id": user,
            "state": "dead",
            "in_doubt": 0,
            "attempts": MAX_ATTEMPTS,
            "message_id": None,
        }
    in_doubt = {user for user, row in deliveries.items() if row["in_doubt"]}
    assert in_doubt == stalling
    assert {user for user, count in hits.items() if count > 1} <= in_doubt  # duplicates only among in-doubt rows
    assert all(hits[f"u{i}"] == 1 for i in range(1, n + 1) if f"u{i}" not in stalling | gone)
    assert all(request.verified for request in webhook_sink.requests)
    assert unknown_codes == {"timeout_after_send"}  # the attempt says what made it unknown


def sms_workspace(tmp_path: Path, twilio: FakeTwilio, top: str = "") -> Workspace:
    ws = make_workspace(
        tmp_path,
        top=top,
        providers={"twilio": {"type": "twilio", "rate": 100, **twilio.provider_settings(timeout_s=TIMEOUT_S)}},
        channels={"sms": "twilio"},
    )
    ws.write(
        "users.csv", "user_id,phone,first_name\n" + "".join(f"u{i},+1415555{1000 + i},N{i}\n" for i in range(1, 4))
    )
    ws.write(
        "aud.csv",
        "user_id,order_id,carrier,tracking_url\n" + "".join(f"u{i},A{i},UPS,https://t/{i}\n" for i in range(1, 4)),
    )
    ws.write("c.toml", campaign_toml("c1", "order_shipped", ["sms"], "aud.csv"))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    return ws


def on_a_terminal(ws: Workspace, *args: str) -> tuple[int, str]:
    """Run the CLI with its output on a pseudo-terminal, as a person sees it: (exit code, text)."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "NOTIFYCTL_CONFIG": str(ws.config), "COLUMNS": "200", "TERM": "dumb"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifyctl.cli", *args], cwd=ws.root, env=env, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    code = proc.wait(timeout=120)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    return code, " ".join(text.split())


def test_twilio_taking_a_message_then_hanging_holds_it_in_doubt(tmp_path: Path) -> None:
    with FakeTwilio() as twilio:
        ws = sms_workspace(tmp_path, twilio)
        twilio.script(process_then_stall(TIMEOUT_S + 3))  # created (it will go out), then no answer in time

        code, text = on_a_terminal(ws, "broadcast", "c.toml")

        assert code == 1, text  # held rows are not a success: cron can act on it
        assert len(twilio.message_requests) == 3  # exactly one request for the held one: not retried
        assert len(twilio.sent) == 3  # Twilio has all three, one of them without notifyctl hearing so
        with ws.db() as conn:
            run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
            held = conn.execute(
                "SELECT d.state, d.in_doubt, d.attempts, a.outcome, a.code FROM deliveries d "
                "JOIN attempts a ON a.delivery_id=d.id WHERE d.state != 'sent'"
            ).fetchall()
        assert [tuple(row) for row in held] == [("in_doubt", 1, 1, "in_doubt", "timeout_after_send")]
        assert "1 held in doubt" in text
        assert f"notifyctl dlq redrive --run {run_id} --in-doubt" in text

        redriven = ws.cli("dlq", "redrive", "--run", run_id, "--in-doubt", "--json")  # the operator's choice
        assert redriven.exit_code == 0, redriven.output
        assert len(twilio.sent) == 4


def test_twilio_in_doubt_resend_setting_sends_it_again(tmp_path: Path) -> None:
    with FakeTwilio() as twilio:
        ws = sms_workspace(tmp_path, twilio, top='in_doubt = "resend"')
        twilio.script(process_then_stall(TIMEOUT_S + 3))

        result = ws.cli("broadcast", "c.toml", "--json")

        assert result.exit_code == 0, result.output
        summary = orjson.loads(result.stdout)
        assert summary["counts"] == {"sms": {"sent": 3}} and summary["held_in_doubt"] == 0
        assert len(twilio.message_requests) == 4  # the operator asked for the re-send: one person has two
        with ws.db() as conn:
            assert conn.execute("SELECT count(*) FROM deliveries WHERE in_doubt=1 AND state='sent'").fetchone()[0] == 1


def test_smtp_server_taking_a_message_then_dropping_holds_it_in_doubt(tmp_path: Path) -> None:
    with FakeSmtp() as smtp:
        smtp_settings = {
            "type": "smtp",
            "host": smtp.host,
            "port": smtp.port,
            "from_address": "sender@example.com",
            "start_tls": False,
            "timeout_s": TIMEOUT_S,
            "rate": 100,
        }
        ws = make_workspace(
            tmp_path,
            providers={"smtp": smtp_settings},
            channels={"email": "smtp"},
            top='public_url = "https://notify.acme-mail.io"',  # a real provider carries marketing email
        )
        ws.write(
            "users.csv", "user_id,email,first_name\n" + "".join(f"u{i},u{i}@example.org,N{i}\n" for i in range(1, 4))
        )
        ws.write("aud.csv", audience_csv(3))
        ws.write("c.toml", campaign_toml("c1", "welcome", ["email"], "aud.csv"))
        assert ws.cli("users", "import", "users.csv").exit_code == 0
        smtp.script_data(ACCEPT_THEN_DROP)  # the first message is queued, its "250" never sent

        result = ws.cli("broadcast", "c.toml", "--json")

        assert result.exit_code == 1, result.output
        summary = orjson.loads(result.stdout)
        assert summary["counts"] == {"email": {"sent": 2, "in_doubt": 1}}
        assert summary["held_in_doubt"] == 1
        with ws.db() as conn:
            [(held_address, attempts, code)] = conn.execute(
                "SELECT d.address, d.attempts, a.code FROM deliveries d JOIN attempts a ON a.delivery_id=d.id "
                "WHERE d.state='in_doubt'"
            ).fetchall()
        assert attempts == 1 and code == "reset_after_send"
        at_server = Counter(rcpt for mail in smtp.messages for rcpt in mail.rcpt_tos)
        assert at_server == {f"u{i}@example.org": 1 for i in range(1, 4)}  # one each, the held one included
        assert at_server[held_address] == 1
        assert smtp.transactions == 3  # never sent a second time
