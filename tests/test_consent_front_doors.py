"""Every front door holds consent when a caller names a category: a template, campaign, event,
`send --category` or `POST /v1/notify` naming an undefined category is refused, and a caller cannot
send a marketing template as another kind past a user's opt-out (policy/categories.py, the one rule:
its cases are in tests/test_category_rule.py).
And no email with a one-click unsubscribe link goes to a real provider while the link points at no
real public address (app/links.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fakes.smtp import FakeSmtp
from tests.test_server_harness import running
from tests.workspace import Workspace, make_workspace, users_csv

CATEGORIES = """
[categories.newsletter]
kind = "marketing"

[categories.digest]
kind = "marketing"
protections_off = ["quiet_hours"]

[categories.receipts]
kind = "transactional"

[categories.alarms]
kind = "critical"
"""
WELCOME_DATA = '{"product_name": "Acme"}'


def workspace(tmp_path: Path, **kwargs: Any) -> Workspace:
    """Users u1-u3 on email (the outbox); u1 opted out of marketing email."""
    ws = make_workspace(tmp_path, **kwargs)
    assert ws.cli("users", "import", str(ws.write("users.csv", users_csv(3)))).exit_code == 0
    opt_out = ws.cli("prefs", "set", "u1", "--channel", "email", "--category", "marketing", "--off")
    assert opt_out.exit_code == 0, opt_out.output
    return ws


def said(result: Any) -> str:
    """What the CLI wrote to stderr, lines unwrapped."""
    return " ".join(result.stderr.split())


def rows(ws: Workspace, sql: str) -> list[tuple[Any, ...]]:
    with ws.db() as conn:
        return [tuple(row) for row in conn.execute(sql)]


def nothing_written(ws: Workspace) -> bool:
    with ws.db() as conn:
        deliveries = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        run_rows = conn.execute("SELECT count(*) FROM runs WHERE kind != 'api'").fetchone()[0]
    return deliveries == 0 and run_rows == 0 and not list((ws.root / "outbox").glob("*.eml"))


# --- every front door --------------------------------------------------------------------------------


@pytest.mark.parametrize("category", ["transactional", "security", "whatever"])
def test_send_category_cannot_carry_marketing_past_an_opt_out(tmp_path: Path, category: str) -> None:
    ws = workspace(tmp_path)
    result = ws.cli(
        "send", "-t", "welcome", "-u", "u1", "--channel", "email", "--data", WELCOME_DATA, "--category", category
    )
    assert result.exit_code == 2, result.output
    assert "template 'welcome'" in said(result) and f"'{category}'" in said(result)
    assert nothing_written(ws)


def test_send_category_of_the_same_kind_is_accepted(tmp_path: Path) -> None:
    ws = workspace(tmp_path, extra=CATEGORIES)
    result = ws.cli(
        "send", "-t", "welcome", "-u", "u2", "--channel", "email", "--data", WELCOME_DATA, "--category", "newsletter",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert rows(ws, "SELECT category, state FROM deliveries") == [("newsletter", "sent")]


def test_a_campaign_cannot_carry_marketing_past_an_opt_out(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    ws.write("audience.csv", "user_id\nu1\nu2\n")
    ws.write(
        "campaign.toml",
        'id = "c1"\ntemplate = "welcome"\ncategory = "security"\nchannels = ["email"]\naudience = "audience.csv"\n'
        '[data]\nproduct_name = "Acme"\n',
    )
    for args in (["--dry-run"], []):
        result = ws.cli("broadcast", "campaign.toml", *args)
        assert result.exit_code == 2, result.output
        assert "cannot be sent as 'security' (critical)" in said(result)
    assert nothing_written(ws)


def test_an_event_cannot_carry_marketing_past_an_opt_out(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    welcome = {"template": "welcome", "channels": ["email"], "data": {"product_name": "A"}}
    events = [
        {"event_id": "e1", "user_id": "u2", **welcome},
        {"event_id": "e2", "user_id": "u1", **welcome, "category": "transactional"},
        {"event_id": "e3", "user_id": "u1", **welcome, "category": "nope"},
    ]
    ws.write("events.jsonl", "".join(orjson.dumps(e).decode() + "\n" for e in events))
    result = ws.cli("send", "--events", "events.jsonl")
    assert result.exit_code == 2, result.output
    assert "line 2" in said(result) and "cannot be sent as 'transactional'" in said(result)
    assert "line 3" in said(result) and "category 'nope' is not defined" in said(result)
    assert nothing_written(ws)

    result = ws.cli("send", "--events", "events.jsonl", "--skip-invalid", "--json")  # the valid one only
    assert result.exit_code == 0, result.output
    assert rows(ws, "SELECT user_id, category, state FROM deliveries") == [("u2", "marketing", "sent")]


@pytest.mark.parametrize(
    ("category", "message"),
    [
        pytest.param("security", "cannot be sent as 'security' (critical)", id="critical"),
        pytest.param("transactional", "cannot be sent as 'transactional' (transactional)", id="transactional"),
        pytest.param("whatever", "category 'whatever' is not defined", id="undefined"),
    ],
)
async def test_the_api_cannot_carry_marketing_past_an_opt_out(tmp_path: Path, category: str, message: str) -> None:
    ws = workspace(tmp_path)
    body = {"user_id": "u1", "template": "welcome", "channels": ["email"], "data": {"product_name": "A"}}
    async with running(ws) as srv:
        status, answer = await srv.api("POST", "/v1/notify", json={**body, "category": category})
        assert status == 422, answer
        assert message in answer["error"]["message"]
        status, answer = await srv.api("POST", "/v1/notify", json=body)  # the template's own: the opt-out holds
        assert status == 202, answer
        assert [d["reason"] for d in answer["deliveries"]] == ["preference_off"]
    assert rows(ws, "SELECT category, state FROM deliveries") == [("marketing", "skipped")]


def test_a_template_naming_an_undefined_category_is_refused_at_load(tmp_path: Path) -> None:
    ws = workspace(tmp_path, extra=CATEGORIES)
    shutil.copytree(tmp_path / "templates" / "welcome", tmp_path / "templates" / "bulk_promo")
    manifest = tmp_path / "templates" / "bulk_promo" / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('category = "marketing"', 'category = "bulk"'))

    result = ws.cli("send", "-t", "bulk_promo", "-u", "u2", "--channel", "email", "--data", WELCOME_DATA)
    assert result.exit_code == 2, result.output
    assert "template 'bulk_promo': category 'bulk' is not defined in the configuration" in said(result)
    assert "(known: alarms, digest, marketing, newsletter, receipts, security, transactional)" in said(result)
    assert ws.cli("templates", "list").exit_code == 2
    doctor = ws.cli("doctor", "--offline", "--json")
    assert doctor.exit_code == 1
    assert any("category 'bulk' is not defined" in c["message"] for c in orjson.loads(doctor.stdout)["checks"])
    assert nothing_written(ws)


async def test_the_api_refuses_a_template_naming_an_undefined_category(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    shutil.copytree(tmp_path / "templates" / "welcome", tmp_path / "templates" / "bulk_promo")
    manifest = tmp_path / "templates" / "bulk_promo" / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('category = "marketing"', 'category = "bulk"'))
    body = {"user_id": "u2", "template": "bulk_promo", "channels": ["email"], "data": {"product_name": "A"}}
    async with running(ws) as srv:
        status, answer = await srv.api("POST", "/v1/notify", json=body)
    assert status == 422 and "category 'bulk' is not defined" in answer["error"]["message"]


# --- unsubscribe links and public_url ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "problem"),
    [
        pytest.param(None, "public_url is not set (links would point at http://127.0.0.1:8080)", id="unset"),
        pytest.param("https://notify.example.com", "is an example or local address", id="example-com"),
        pytest.param("https://example.org/notify", "is an example or local address", id="example-org"),
        pytest.param("http://localhost:8080", "is an example or local address", id="localhost"),
        pytest.param("https://127.0.0.1", "is an example or local address", id="loopback"),
    ],
)
def test_marketing_email_to_a_real_provider_needs_a_real_public_url(
    tmp_path: Path, public_url: str | None, problem: str
) -> None:
    with FakeSmtp() as smtp:
        smtp_conf = {"type": "smtp", "host": smtp.host, "port": smtp.port, "start_tls": False, "from_address": "n@x.co"}
        top = f"public_url = {public_url!r}" if public_url else ""
        ws = workspace(tmp_path, providers={"mail": smtp_conf}, channels={"email": "mail"}, top=top)
        result = ws.cli("send", "-t", "welcome", "-u", "u2", "--channel", "email", "--data", WELCOME_DATA)
        assert result.exit_code == 2, result.output
        assert "carries a one-click unsubscribe link and provider mail delivers it to real inboxes" in said(result)
        assert problem in said(result)
        assert nothing_written(ws)
        # Transactional email carries no such link: it goes.
        shipped = '{"order_id": "A-1", "carrier": "UPS", "tracking_url": "https://t.example/A-1"}'
        result = ws.cli("send", "-t", "order_shipped", "-u", "u2", "--channel", "email", "--data", shipped)
        assert result.exit_code == 0, result.output
        assert len(smtp.messages) == 1 and "List-Unsubscribe" not in smtp.messages[0].message()
        doctor = ws.cli("doctor", "--offline", "--json")
    assert doctor.exit_code == 1
    fails = [c["message"] for c in orjson.loads(doctor.stdout)["checks"] if c["status"] == "fail"]
    assert any(problem in m and "unsubscribe links in email through mail would lead nowhere" in m for m in fails)


def test_marketing_email_to_a_real_provider_with_a_real_public_url_goes(tmp_path: Path) -> None:
    with FakeSmtp() as smtp:
        smtp_conf = {"type": "smtp", "host": smtp.host, "port": smtp.port, "start_tls": False, "from_address": "n@x.co"}
        top = 'public_url = "https://notify.acme-mail.io"'
        ws = workspace(tmp_path, providers={"mail": smtp_conf}, channels={"email": "mail"}, top=top)
        result = ws.cli("send", "-t", "welcome", "-u", "u2", "--channel", "email", "--data", WELCOME_DATA)
        assert result.exit_code == 0, result.output
        [mail] = smtp.messages
    assert str(mail.message()["List-Unsubscribe"]).startswith("<https://notify.acme-mail.io/u/")


def test_the_local_outbox_only_warns_about_public_url(tmp_path: Path) -> None:
    ws = workspace(tmp_path, top='public_url = "https://notify.example.com"')
    result = ws.cli("send", "-t", "welcome", "-u", "u2", "--channel", "email", "--data", WELCOME_DATA)
    assert result.exit_code == 0, result.output
    doctor = ws.cli("doctor", "--offline")
    assert doctor.exit_code == 0 and "all good" in doctor.stdout
    assert "public_url https://notify.example.com is an example or local address" in " ".join(doctor.stdout.split())


async def test_the_api_refuses_marketing_email_to_a_real_provider_without_a_public_url(tmp_path: Path) -> None:
    with FakeSmtp() as smtp:
        smtp_conf = {"type": "smtp", "host": smtp.host, "port": smtp.port, "start_tls": False, "from_address": "n@x.co"}
        ws = workspace(tmp_path, providers={"mail": smtp_conf}, channels={"email": "mail"})
        body = {"user_id": "u2", "template": "welcome", "channels": ["email"], "data": {"product_name": "A"}}
        async with running(ws) as srv:
            status, answer = await srv.api("POST", "/v1/notify", json=body)
        assert smtp.messages == []
    assert status == 422 and "public_url is not set" in answer["error"]["message"]
