"""Canary secrets: run a realistic workload and search every output for the secrets it was given.

Webhook signing secret, Twilio auth token, Postmark server token and the unsubscribe secret are
planted in the configuration, the environment and the user directory; then users are imported, a
webhook broadcast runs through failures (5xx retries, a 410, a dead letter), and the operator looks
at everything (dlq list/show, audit, runs show, users/endpoints show, doctor), a log file is
written and a crash report produced. Not one canary may appear in any console output, log line,
audit table row or crash report.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from notifyctl.cli import app
from notifyctl.cli.admin import register
from notifyctl.errors import TransientError
from notifyctl.logs import LOGGER_NAME, address_field, configure_logging, write_crash_report
from notifyctl.security.redaction import configured_secrets
from notifyctl.settings import load_settings
from tests.webhook_sink import WebhookSink, respond
from tests.workspace import Workspace, campaign_toml, make_workspace

if not any(command.name == "doctor" for command in app.registered_commands):
    register(app)

WEBHOOK_KEY = base64.b64encode(b"canary-webhook-signing-key-0001").decode()
WEBHOOK_SECRET = "whsec_" + WEBHOOK_KEY
TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "c0ffee11c0ffee22c0ffee33c0ffee44"
TWILIO_ENV_TOKEN = "d00dfeedd00dfeedd00dfeedd00dfeed"
POSTMARK_TOKEN = "pm-canary-7f3a9c1e5b"
UNSUBSCRIBE_SECRET = "unsub-canary-51d0e8a4"
CANARIES = (WEBHOOK_SECRET, WEBHOOK_KEY, TWILIO_TOKEN, TWILIO_ENV_TOKEN, POSTMARK_TOKEN, UNSUBSCRIBE_SECRET)
AUDIT_TABLES = ("deliveries", "attempts", "dead_letters", "audit_events")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs" / "notifyctl.log"
    yield path
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_notifyctl_handler", False):
            logger.removeHandler(handler)
            handler.close()
    logger.propagate = True


def workspace(root: Path, sink: WebhookSink) -> Workspace:
    ws = make_workspace(
        root,
        top=f'unsubscribe_secret = "{UNSUBSCRIBE_SECRET}"',
        providers={
            "pm": {"type": "postmark", "server_token": POSTMARK_TOKEN, "from_address": "n@example.com",
                   "base_url": sink.url("/postmark")},
            "tw": {"type": "twilio", "account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN,
                   "from_number": "+14155550100", "base_url": sink.url("/twilio")},
        },
        channels={"email": "outbox", "inapp": "inapp", "webhook": "webhook", "sms": "tw"},
        retry={"max_attempts": 2},
    )  # fmt: skip
    # make_workspace writes `unsubscribe_secret` first; the canary one must win.
    text = ws.config.read_text().replace('unsubscribe_secret = "test-secret"\n', "", 1)
    ws.config.write_text(text)
    return ws


def test_no_canary_secret_appears_in_any_output(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_ENV_TOKEN)
    outputs: list[str] = []
    with WebhookSink(secrets=[WEBHOOK_SECRET]) as sink:
        sink.on_path("/hook/gone", respond(410))
        sink.on_path("/hook/flaky", respond(503, {"Retry-After": "0"}))
        sink.on_path("/twilio/2010-04-01/Accounts/" + TWILIO_SID + ".json", respond(401))
        sink.on_path("/postmark/server", respond(401))
        ws = workspace(tmp_path, sink)
        rows = ["user_id,email,phone,first_name,webhook_url,webhook_secret"]
        for i, path in enumerate(["/hook/ok", "/hook/gone", "/hook/flaky", "/hook/ok2"], start=1):
            rows.append(f"u{i},user{i}@example.com,+1415555{i:04d},Name{i},{sink.url(path)},{WEBHOOK_SECRET}")
        ws.write("users.csv", "\n".join(rows) + "\n")
        ws.write("aud.csv", "user_id,first_name\n" + "".join(f"u{i},Name{i}\n" for i in range(1, 5)))
        ws.write("c.toml", campaign_toml("c1", "welcome", ["webhook", "email", "inapp"], "aud.csv"))

        def run(*args: str) -> dict[str, object] | list[object] | None:
            result = ws.cli(*args)
            outputs.append(f"$ notifyctl {' '.join(args)}\n{result.stdout}\n{result.stderr}")
            try:
                parsed: dict[str, object] | list[object] = orjson.loads(result.stdout)
            except orjson.JSONDecodeError:
                return None
            return parsed

        settings = load_settings(ws.config)
        configure_logging("debug", log_file, configured_secrets(settings))
        run("users", "import", "users.csv")
        summary = run("broadcast", "c.toml", "--json")
        assert isinstance(summary, dict) and summary["counts"]["webhook"]["dead"] == 2  # type: ignore[index]
        assert all(r.verified for r in sink.requests_to("/hook/ok"))
        run_id = str(summary["run_id"])
        dead = run("dlq", "list", "--json")
        assert isinstance(dead, list) and len(dead) == 2
        for item in dead:
            assert isinstance(item, dict)
            shown = run("dlq", "show", str(item["delivery_id"]), "--json")
            assert isinstance(shown, dict) and shown["envelope"]
            run("dlq", "show", str(item["delivery_id"]))
        run("audit", "--format", "json")
        run("audit", "--format", "csv")
        run("audit")
        run("runs", "show", run_id, "--json")
        run("runs", "show", run_id)
        run("users", "show", "u1", "--json")
        run("endpoints", "show", "u1", "--json")
        doctor = run("doctor", "--json")
        assert isinstance(doctor, dict) and doctor["ok"] is False  # both probes were answered 401
        run("doctor")
        run("send", "-t", "welcome", "-u", "u1", "--channel", "webhook", "--json")

    # What the engine and the CLI would log around a failure, and a crash with secrets in its message.
    log = logging.getLogger(LOGGER_NAME + ".pipeline")
    log.warning(
        f"twilio said 401 for {TWILIO_SID}:{TWILIO_TOKEN} with POSTMARK {POSTMARK_TOKEN}",
        extra={"event": "attempt", "provider": "tw", "code": "401", "secret": WEBHOOK_SECRET,
               **address_field("user1@example.com")},
    )  # fmt: skip
    try:
        raise TransientError(f"POST https://{TWILIO_SID}:{TWILIO_TOKEN}@api.twilio.com signing with {WEBHOOK_SECRET}")
    except TransientError as exc:
        crash = write_crash_report(exc, tmp_path / "crashes", configured_secrets(settings))

    haystacks = {"console": "\n".join(outputs), "log file": log_file.read_text(), "crash report": crash.read_text()}
    conn = ws.db()
    for table in AUDIT_TABLES:
        haystacks[f"table {table}"] = "\n".join(repr(tuple(row)) for row in conn.execute(f"SELECT * FROM {table}"))
    # The haystacks hold the real thing: errors, envelopes, endpoint URLs, the doctor's verdicts.
    assert "HTTP 410" in haystacks["console"] and "credentials were rejected" in haystacks["console"]
    assert "/hook/gone" in haystacks["table deliveries"] and "HTTP 503" in haystacks["table attempts"]
    assert '"parts"' in haystacks["table dead_letters"] and "provider" in haystacks["log file"]
    leaks = [(canary, where) for canary in CANARIES for where, text in haystacks.items() if canary in text]
    assert leaks == []
    assert "user1@example.com" not in haystacks["log file"]
