"""A provider that quotes a credential in its error answer (an SMTP 535 with the password, an HTTP
API error body with the server token) leaves no trace of it: not in the database file (deliveries,
attempts, dead letters), nor in `dlq show --json`, `audit --format csv` or `runs show --json`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from notifyctl.errors import PermanentError, TransientError
from notifyctl.models import Envelope
from notifyctl.pipeline import outcomes
from notifyctl.security.redaction import MASK, Scrubber
from tests.fakes.postmark import FakePostmark, postmark_error
from tests.fakes.smtp import FakeSmtp
from tests.workspace import Workspace, make_workspace, users_csv

SMTP_PASSWORD = "Tr0ub4dor-smtp-pa55word"
POSTMARK_TOKEN = "pm-server-token-5f2b9c0e"


def email_workspace(tmp_path: Path, provider: dict[str, Any]) -> Workspace:
    ws = make_workspace(
        tmp_path,
        providers={"mail": provider},
        channels={"email": "mail"},
        top='public_url = "https://notify.acme-mail.io"',
    )
    assert ws.cli("users", "import", str(ws.write("users.csv", users_csv(1)))).exit_code == 0
    return ws


def send_welcome(ws: Workspace) -> str:
    result = ws.cli("send", "-t", "welcome", "-u", "u1", "--channel", "email", "--data", '{"product_name": "A"}')
    assert result.exit_code != 0 or "dead" in result.stdout, result.stdout + result.stderr
    with ws.db() as conn:
        [(run_id, state)] = conn.execute("SELECT run_id, state FROM deliveries").fetchall()
    assert state == "dead"
    return str(run_id)


def database_bytes(ws: Workspace) -> bytes:
    """The whole database file after a full checkpoint: every table, index and free page."""
    conn = sqlite3.connect(ws.db_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    return ws.db_path.read_bytes()


def assert_nowhere(ws: Workspace, run_id: str, secret: str, quoted: str) -> None:
    """`secret` is in no byte of the database nor in what the operator's commands print; the rest of
    the provider's text (`quoted`, around the secret) is still there for the operator to read."""
    assert secret.encode() not in database_bytes(ws)
    with ws.db() as conn:
        [message] = conn.execute("SELECT error_message FROM deliveries").fetchone()
    assert quoted in message and MASK in message, message
    [delivery_id] = [str(r[0]) for r in ws.db().execute("SELECT id FROM deliveries")]
    outputs = {
        "dlq show": ws.cli("dlq", "show", delivery_id, "--json"),
        "audit": ws.cli("audit", "--run", run_id, "--format", "csv"),
        "runs show": ws.cli("runs", "show", run_id, "--json"),
    }
    for name, result in outputs.items():
        assert result.exit_code == 0, (name, result.stderr)
        assert secret not in result.stdout + result.stderr, name
    shown = orjson.loads(outputs["dlq show"].stdout)
    assert quoted in orjson.dumps(shown).decode()


def test_an_smtp_535_quoting_the_password_is_stored_without_it(tmp_path: Path) -> None:
    with FakeSmtp() as smtp:
        smtp.refuse_login("535 5.7.8 Authentication failed for {login} with password {password}")
        ws = email_workspace(
            tmp_path,
            {
                "type": "smtp",
                "host": smtp.host,
                "port": smtp.port,
                "from_address": "Acme <noreply@example.com>",
                "start_tls": False,
                "username": "mailer",
                "password": SMTP_PASSWORD,
                "timeout_s": 5,
            },
        )
        run_id = send_welcome(ws)
    assert_nowhere(ws, run_id, SMTP_PASSWORD, "Authentication failed for mailer with password")


@pytest.mark.parametrize(
    ("status", "attempts"),
    [
        pytest.param(422, 1, id="rejected"),
        pytest.param(500, 4, id="transient-until-given-up"),
    ],
)
def test_an_http_api_error_quoting_the_server_token_is_stored_without_it(
    tmp_path: Path, status: int, attempts: int
) -> None:
    with FakePostmark(token=POSTMARK_TOKEN) as postmark:
        postmark.fail_next(
            attempts, postmark_error(status, 300, f"Bad request: X-Postmark-Server-Token {POSTMARK_TOKEN} ...")
        )
        ws = email_workspace(
            tmp_path,
            {
                "type": "postmark",
                "base_url": postmark.url,
                "server_token": POSTMARK_TOKEN,
                "from_address": "Acme <noreply@example.com>",
                "timeout_s": 5,
            },
        )
        run_id = send_welcome(ws)
        assert len(postmark.requests) == attempts
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == attempts
    assert_nowhere(ws, run_id, POSTMARK_TOKEN, "Bad request: X-Postmark-Server-Token")


def envelope(**extra: Any) -> Envelope:
    return Envelope(
        delivery_id=1,
        run_id="run_x",
        channel="webhook",
        user_id="u1",
        address="https://hooks.example.com/in",
        template="welcome",
        template_version="v1",
        category="transactional",
        idempotency_key="k",
        message_id="m",
        parts={"body": "{}"},
        **extra,
    )


@pytest.mark.parametrize(
    ("make_error", "retry_at"),
    [
        pytest.param(lambda text: PermanentError(text, code="400"), None, id="rejected"),
        pytest.param(lambda text: TransientError(text, code="500"), 1.0, id="not-sent"),
        pytest.param(lambda text: TransientError(text, code="500"), None, id="given-up"),
        pytest.param(lambda text: RuntimeError(text), None, id="unknown"),
    ],
)
def test_failed_outcomes_carry_scrubbed_text(
    make_error: Callable[[str], BaseException], retry_at: float | None
) -> None:
    """Every outcome class built from a provider's error text: configured secrets, the envelope's own
    signing secret and known shapes (Bearer values) are masked, even past the stored length."""
    signing = "endpoint-signing-secret-42"
    scrub = Scrubber(["configured-api-key-0001"])
    text = f"echo {signing} configured-api-key-0001 Authorization: Bearer abc.def-ghi"
    error = outcomes.classify(make_error(text))
    outcome = outcomes.failed(
        envelope(signing_secrets=[signing]), 1, "hook", error, 1.0, retry_at=retry_at, resend=False, scrub=scrub
    )
    assert outcome.message is not None
    assert "echo" in outcome.message
    for secret in (signing, "configured-api-key-0001", "abc.def-ghi"):
        assert secret not in outcome.message
    long_text = "x" * (outcomes.MAX_ERROR_CHARS - 10) + signing
    long_outcome = outcomes.failed(
        envelope(signing_secrets=[signing]),
        1,
        "hook",
        outcomes.classify(make_error(long_text)),
        1.0,
        retry_at=retry_at,
        resend=False,
        scrub=scrub,
    )
    assert long_outcome.message is not None and signing[:8] not in long_outcome.message
