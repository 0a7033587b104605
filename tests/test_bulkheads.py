"""Bulkheads end to end: email (SES via moto), SMS (Twilio fake), push (FCM fake), in-app and webhook in
one broadcast; a stalled provider holds up only its own channel. Plus the per-recipient side effects
of providers: one push delivery per device, FCM UNREGISTERED tokens dropped (skipped, not dead), Twilio
21610 suppressing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notifyctl.app.broadcast import broadcast
from notifyctl.cli.common import outcome_exit_code
from notifyctl.intake.campaigns import load_campaign
from notifyctl.models import User
from notifyctl.pipeline.engine import RunOutcome
from tests.fakes.fcm import FakeFcm
from tests.fakes.moto import MotoSes
from tests.fakes.twilio import FakeTwilio
from tests.provider_fixtures import add_users, open_context, order_campaign, ses_settings, webhook_settings
from tests.unreachable import Blackhole
from tests.webhook_sink import SINK_SECRET, WebhookSink
from tests.workspace import Workspace, make_workspace

pytest_plugins = ("tests.provider_fixtures",)

ALL_CHANNELS = ("email", "sms", "push", "inapp", "webhook")
SMS_TIMEOUT_S = 0.6
MAX_ATTEMPTS = 3


def phone(i: int) -> str:
    """A number phonenumbers accepts as valid (suppressions store numbers normalised)."""
    return f"+1201555{100 + i:04d}"


def channel_workspace(
    tmp_path: Path,
    *,
    moto: MotoSes | None = None,
    twilio: FakeTwilio | None = None,
    fcm: tuple[FakeFcm, Path] | None = None,
    twilio_base_url: str | None = None,
) -> Workspace:
    """A workspace with every given provider on its channel, plus in-app and webhooks (Twilio at
    `twilio_base_url` instead of its fake when given)."""
    providers: dict[str, dict[str, Any]] = {}
    channels = {"inapp": "inapp", "webhook": "webhook"}
    if moto is not None:
        providers["ses"] = {"type": "ses", **ses_settings(moto.url), "concurrency": 4}
        channels["email"] = "ses"
    if twilio is not None:
        providers["twilio"] = {
            "type": "twilio",
            **twilio.provider_settings(**({"base_url": twilio_base_url} if twilio_base_url else {})),
            "timeout_s": SMS_TIMEOUT_S,
            "concurrency": 8,
        }
        channels["sms"] = "twilio"
    if fcm is not None:
        fake, key_file = fcm
        providers["fcm"] = {"type": "fcm", **fake.provider_settings(key_file), "timeout_s": 2, "concurrency": 4}
        channels["push"] = "fcm"
    return make_workspace(
        tmp_path,
        providers=providers,
        channels=channels,
        webhook=webhook_settings(),
        retry={"max_attempts": MAX_ATTEMPTS, "base_s": 0.05, "cap_s": 0.1},
    )


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    with Blackhole() as hole:
        yield hole


def deliveries(db_path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [
            dict(row)
            for row in conn.execute(
                "SELECT id, user_id, channel, address, state, reason, provider, provider_message_id, attempts, "
                "error_class FROM deliveries ORDER BY id"
            )
        ]
    finally:
        conn.close()


def by_channel(rows: list[dict[str, Any]], channel: str) -> list[dict[str, Any]]:
    return [row for row in rows if row["channel"] == channel]


async def run_campaign(ws: Workspace, campaign_file: Path) -> RunOutcome:
    ctx = open_context(ws)
    try:
        outcome = await broadcast(ctx, load_campaign(campaign_file))
    finally:
        ctx.conn.close()
    assert isinstance(outcome, RunOutcome)
    return outcome


async def test_a_stalled_sms_provider_holds_up_only_the_sms_channel(
    tmp_path: Path,
    moto_ses: MotoSes,
    twilio_api: FakeTwilio,
    fcm_api: FakeFcm,
    fcm_key_file: Path,
    webhook_sink: WebhookSink,
    blackhole: Blackhole,
) -> None:
    n = 5
    # Twilio's address takes no connection: every attempt waits out the connect timeout, and was not
    # sent (a stall after the request was written would be an unknown outcome, held after one try).
    ws = channel_workspace(
        tmp_path,
        moto=moto_ses,
        twilio=twilio_api,
        fcm=(fcm_api, fcm_key_file),
        twilio_base_url=f"http://127.0.0.1:{blackhole.port}",
    )
    add_users(
        ws,
        [
            User(
                user_id=f"u{i}",
                email=f"user{i}@example.com",
                phone=phone(i),
                locale="en",
                push_tokens=[f"device-{i}"],
                webhook_url=webhook_sink.url(),
                webhook_secret=SINK_SECRET,
            )
            for i in range(1, n + 1)
        ],
    )
    campaign = order_campaign(ws, "c1", ALL_CHANNELS, [f"u{i}" for i in range(1, n + 1)])

    ctx = open_context(ws)
    try:
        run = asyncio.create_task(broadcast(ctx, load_campaign(campaign)))
        # Times are taken from the moment the plan is in the outbox: providers are open by then
        # (opening them, SDK imports included, is start-up time shared by every channel).
        planned_at: float | None = None
        others_done_s: float | None = None
        sms_then: list[dict[str, Any]] = []
        while not run.done():
            rows = deliveries(ws.db_path)
            if rows and planned_at is None:
                planned_at = time.monotonic()
            others = [row for row in rows if row["channel"] != "sms"]
            if planned_at is not None and len(others) == 4 * n and all(row["state"] == "sent" for row in others):
                others_done_s = time.monotonic() - planned_at
                sms_then = by_channel(rows, "sms")
                break
            await asyncio.sleep(0.02)
        outcome = await asyncio.wait_for(run, 30)
    finally:
        ctx.conn.close()
    assert planned_at is not None
    total_s = time.monotonic() - planned_at

    assert isinstance(outcome, RunOutcome)
    assert others_done_s is not None, "the other channels did not finish before the run ended"
    # When email, push, in-app and webhook were all sent, every SMS was still being retried.
    assert len(sms_then) == n
    assert all(row["state"] in ("pending", "inflight") for row in sms_then), sms_then
    assert all(row["attempts"] < MAX_ATTEMPTS for row in sms_then)
    # Each SMS needs MAX_ATTEMPTS connect timeouts: the stalled lane takes at least that long, the others far less.
    assert total_s >= MAX_ATTEMPTS * SMS_TIMEOUT_S
    assert others_done_s < MAX_ATTEMPTS * SMS_TIMEOUT_S, others_done_s

    # Then the stalled channel ends dead after its attempts; the others stay sent.
    assert outcome.state == "completed_with_failures"
    rows = deliveries(ws.db_path)
    sms = by_channel(rows, "sms")
    assert [(row["state"], row["attempts"], row["error_class"]) for row in sms] == [
        ("dead", MAX_ATTEMPTS, "TransientError")
    ] * n
    assert twilio_api.message_requests == []  # never reached
    assert twilio_api.sent == []
    assert outcome.counts == {
        "email": {"sent": n},
        "sms": {"dead": n},
        "push": {"sent": n},
        "inapp": {"sent": n},
        "webhook": {"sent": n},
    }
    # What each provider's server recorded matches the audit.
    assert sorted(m.destinations[0] for m in moto_ses.sent_messages()) == sorted(
        row["address"] for row in by_channel(rows, "email")
    )
    assert moto_ses.send_requests == n
    assert sorted(m["message"]["token"] for m in fcm_api.sent) == [f"device-{i}" for i in range(1, n + 1)]
    assert len(webhook_sink.requests) == n and all(request.verified for request in webhook_sink.requests)
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == n


async def test_push_goes_to_every_device_and_unregistered_tokens_are_removed_and_skipped(
    tmp_path: Path, fcm_api: FakeFcm, fcm_key_file: Path
) -> None:
    ws = channel_workspace(tmp_path, fcm=(fcm_api, fcm_key_file))
    add_users(
        ws,
        [
            User(user_id="u1", push_tokens=["phone-1", "tablet-1", "watch-1"], locale="en"),
            User(user_id="u2", push_tokens=["phone-2", "stale-2"], locale="en"),
        ],
    )
    fcm_api.unregister("stale-2")
    campaign = order_campaign(ws, "c1", ["push"], ["u1", "u2"])

    outcome = await run_campaign(ws, campaign)

    # An uninstalled app's token is routine churn, not a failure: cron's broadcast exits 0.
    assert outcome.state == "completed" and outcome_exit_code(outcome) == 0
    assert outcome.counts == {"push": {"sent": 4, "skipped": 1}}
    rows = by_channel(deliveries(ws.db_path), "push")
    names_by_token = {m["message"]["token"]: m["name"] for m in fcm_api.sent}
    u1 = [row for row in rows if row["user_id"] == "u1"]
    # One delivery per device, each in the audit with the message name FCM gave it.
    assert sorted(row["address"] for row in u1) == ["phone-1", "tablet-1", "watch-1"]
    assert all(row["state"] == "sent" and row["provider"] == "fcm" for row in u1)
    assert {row["address"]: row["provider_message_id"] for row in u1} == {
        token: names_by_token[token] for token in ("phone-1", "tablet-1", "watch-1")
    }
    u2 = {row["address"]: row for row in rows if row["user_id"] == "u2"}
    assert u2["phone-2"]["state"] == "sent"
    stale = u2["stale-2"]
    assert (stale["state"], stale["reason"], stale["attempts"]) == ("skipped", "token_unregistered", 1)  # never retried
    with ws.db() as conn:
        devices = [tuple(row) for row in conn.execute("SELECT user_id, token FROM devices ORDER BY user_id, token")]
        [(code, attempt_outcome)] = conn.execute(
            "SELECT code, outcome FROM attempts WHERE delivery_id=?", (stale["id"],)
        ).fetchall()
        dead_letters = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        [removed] = conn.execute("SELECT subject, detail FROM audit_events WHERE kind='device_removed'").fetchall()
    assert (code, attempt_outcome) == ("UNREGISTERED", "permanent")  # the attempt is in the audit as it went
    assert dead_letters == 0  # nothing to redrive
    assert tuple(removed) == ("u2", '{"reason":"provider:UNREGISTERED"}')
    assert devices == [("u1", "phone-1"), ("u1", "tablet-1"), ("u1", "watch-1"), ("u2", "phone-2")]

    # The next campaign no longer plans a delivery to the removed token.
    fcm_api.clear()
    await run_campaign(ws, order_campaign(ws, "c2", ["push"], ["u2"]))
    assert [m["message"]["token"] for m in fcm_api.sent] == ["phone-2"]


async def test_twilio_21610_suppresses_the_number_and_the_next_send_is_skipped(
    tmp_path: Path, twilio_api: FakeTwilio
) -> None:
    ws = channel_workspace(tmp_path, twilio=twilio_api)
    add_users(ws, [User(user_id="u1", phone=phone(1), locale="en"), User(user_id="u2", phone=phone(2), locale="en")])
    twilio_api.opt_out(phone(2))  # u2 replied STOP to this sender

    first = await run_campaign(ws, order_campaign(ws, "c1", ["sms"], ["u1", "u2"]))

    assert first.counts == {"sms": {"sent": 1, "dead": 1}}
    with ws.db() as conn:
        suppressions = [tuple(row) for row in conn.execute("SELECT channel, address, reason, source FROM suppressions")]
    assert suppressions == [("sms", phone(2), "stop", "provider:21610")]
    requests_to_u2 = [r for r in twilio_api.message_requests if f"To=%2B{phone(2)[1:]}" in r.body.decode()]
    assert len(requests_to_u2) == 1  # permanent: never retried

    second = await run_campaign(ws, order_campaign(ws, "c2", ["sms"], ["u1", "u2"]))

    assert second.counts == {"sms": {"sent": 1, "skipped": 1}}
    rows = [row for row in by_channel(deliveries(ws.db_path), "sms") if row["user_id"] == "u2"]
    assert [(row["state"], row["reason"]) for row in rows] == [("dead", None), ("skipped", "suppressed:stop")]
    assert len([r for r in twilio_api.message_requests if f"To=%2B{phone(2)[1:]}" in r.body.decode()]) == 1
    assert [m["To"] for m in twilio_api.sent] == [phone(1), phone(1)]
