"""`notifyctl doctor`: finds what is wrong in plain words, probes providers without sending."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from notifyctl.app.doctor import Check, diagnose, failed
from notifyctl.cli import app
from notifyctl.cli.admin import register
from tests.fakes.smtp import FakeSmtp
from tests.workspace import make_workspace

if not any(command.name == "doctor" for command in app.registered_commands):
    register(app)

POSTMARK_TOKEN = "pm-doctor-canary-token"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def accounts_api() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """Postmark's GET /server and Twilio's GET /Accounts/SID.json: 200 for the right credentials."""
    seen: list[web.Request] = []

    async def postmark_server(request: web.Request) -> web.Response:
        seen.append(request)
        good = request.headers.get("X-Postmark-Server-Token") == POSTMARK_TOKEN
        return web.json_response({"Name": "test"} if good else {"ErrorCode": 10}, status=200 if good else 401)

    async def twilio_account(request: web.Request) -> web.Response:
        seen.append(request)
        expected = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        good = request.headers.get("Authorization") == expected
        return web.json_response({"sid": TWILIO_SID}, status=200 if good else 401)

    application = web.Application()
    application.router.add_get("/server", postmark_server)
    application.router.add_get("/2010-04-01/Accounts/{sid}.json", twilio_account)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def by_area(checks: list[Check]) -> dict[str, list[Check]]:
    grouped: dict[str, list[Check]] = {}
    for check in checks:
        grouped.setdefault(check.area, []).append(check)
    return grouped


async def test_doctor_on_a_healthy_setup_probes_every_provider(
    tmp_path: Path, accounts_api: tuple[str, list[web.Request]]
) -> None:
    base_url, seen = accounts_api
    with FakeSmtp() as smtp:
        ws = make_workspace(tmp_path, providers={
            "pm": {"type": "postmark", "base_url": base_url, "server_token": POSTMARK_TOKEN, "from_address": "n@x.co"},
            "tw": {"type": "twilio", "base_url": base_url, "account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN,
                   "from_number": "+14155550100"},
            "mail": {"type": "smtp", "host": smtp.host, "port": smtp.port, "start_tls": False,
                     "from_address": "n@x.co"},
        }, channels={"email": "pm", "sms": "tw", "webhook": "webhook", "inapp": "inapp"},
           top='public_url = "https://notify.acme-mail.io"')  # fmt: skip
        checks = await diagnose(ws.config, environ={})
        sent_mail = smtp.messages
    grouped = by_area(checks)
    assert not failed(checks), [c for c in checks if c.status == "fail"]
    assert grouped["provider pm"][0].message == "Postmark server: reachable, credentials accepted"
    assert grouped["provider tw"][0].message == "Twilio account: reachable, credentials accepted"
    assert "EHLO answered" in grouped["provider mail"][0].message
    assert sent_mail == []  # nothing was sent
    assert [r.method for r in seen] == ["GET", "GET"]
    assert any("defined but used by no channel: mail" in c.message for c in grouped["config"])


async def test_doctor_reports_each_problem_in_plain_words(
    tmp_path: Path, accounts_api: tuple[str, list[web.Request]]
) -> None:
    base_url, _ = accounts_api
    ws = make_workspace(tmp_path, providers={
        "pm": {"type": "postmark", "base_url": base_url, "server_token": "wrong-token-value", "from_address": "n@x.co"},
        "tw": {"type": "twilio", "base_url": base_url, "account_sid": TWILIO_SID, "from_number": "+14155550100"},
        "mail": {"type": "smtp", "host": "127.0.0.1", "port": 1, "start_tls": False, "from_address": "n@x.co",
                 "timeout_s": 2},
    }, channels={"email": "pm", "sms": "tw", "webhook": "webhook"})  # fmt: skip
    assert ws.cli("users", "import", "/dev/null").exit_code in (0, 1, 2)  # creates the database
    ws.db_path.touch()
    os.chmod(ws.db_path, 0o644)
    broken = tmp_path / "templates" / "welcome" / "email" / "subject.j2"
    broken.write_text("{% if %}", encoding="utf-8")
    (tmp_path / "outbox").mkdir(mode=0o755, exist_ok=True)
    os.chmod(tmp_path / "outbox", 0o755)

    checks = await diagnose(ws.config, environ={})
    problems = [f"{c.area}: {c.message}" for c in checks if c.status == "fail"]
    text = "\n".join(problems)
    assert failed(checks)
    assert "database: " in text and "readable or writable by other users (mode 0644); run: chmod 600" in text
    assert "templates: template 'welcome', part 'email/subject': syntax error" in text
    assert "provider pm: Postmark server: the credentials were rejected (HTTP 401)" in text
    assert "provider tw: no Twilio auth_token" in text
    assert "provider mail: cannot talk to SMTP server 127.0.0.1" in text
    assert "provider outbox: outbox folder" in text and "chmod 700" in text
    assert "wrong-token-value" not in "\n".join(c.message for c in checks)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param("not = [valid", "not valid TOML", id="bad-toml"),
        pytest.param('[providers.x]\ntype = "pigeon"\n', "unknown provider type 'pigeon'", id="unknown-provider"),
        pytest.param('[channels]\nemail = "nope"\n', "provider 'nope' is not defined", id="undefined-provider"),
    ],
)
def test_doctor_cli_on_a_broken_config_exits_1(tmp_path: Path, config: str, message: str) -> None:
    ws = make_workspace(tmp_path)
    ws.config.write_text(config, encoding="utf-8")
    result = ws.cli("doctor", "--json")
    assert result.exit_code == 1
    report = orjson.loads(result.stdout)
    assert report["ok"] is False
    assert report["checks"][0]["area"] == "config" and message in report["checks"][0]["message"]


def test_doctor_cli_offline_on_a_fresh_workspace_is_fine(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    result = ws.cli("doctor", "--offline")
    assert result.exit_code == 0, result.output
    assert "all good" in result.stdout
    assert "does not exist yet" in " ".join(result.stdout.split())
