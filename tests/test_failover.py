"""Failover and pools through the real pipeline: circuit breakers, a secondary provider, weighted accounts.

The email channel's primary is Postmark (its fake answering 503) and its secondary an SMTP server;
the breaker settings are `[breaker] consecutive_failures = 3`. The SMS channel pools two Twilio
accounts with weights 3:1, each behind its own token bucket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from notifyctl.app.broadcast import broadcast
from notifyctl.backends.local import TokenBucket
from notifyctl.intake.campaigns import load_campaign
from notifyctl.models import Envelope, User
from notifyctl.pipeline.backend import Dispatch, Verdict
from notifyctl.pipeline.engine import RunOutcome
from notifyctl.pipeline.outcomes import Kind, Outcome
from notifyctl.pipeline.router import CircuitBreaker
from notifyctl.pipeline.sender import Sender
from notifyctl.settings import BreakerSettings, RetrySettings
from tests.fakes import RecordedRequest, answer_json
from tests.fakes.postmark import FakePostmark
from tests.fakes.smtp import FakeSmtp
from tests.fakes.twilio import FakeTwilio
from tests.provider_fixtures import (
    OpenProvider,
    add_users,
    open_context,
    order_campaign,
    postmark_settings,
    smtp_settings,
)
from tests.workspace import Workspace, make_workspace

pytest_plugins = ("tests.provider_fixtures",)

UNAVAILABLE = answer_json(503, {"ErrorCode": 0, "Message": "Service unavailable"})
FAILURES_TO_OPEN = 3


def email_users(n: int) -> list[User]:
    return [User(user_id=f"u{i}", email=f"user{i}@example.com", locale="en") for i in range(1, n + 1)]


def email_failover_workspace(
    tmp_path: Path,
    postmark: FakePostmark,
    smtp: FakeSmtp,
    *,
    n: int,
    cooldown_s: float,
    primary: dict[str, Any] | None = None,
    secondary: dict[str, Any] | None = None,
) -> Workspace:
    """email: postmark (primary) with smtp as its secondary; one worker per provider."""
    providers = {
        "postmark": {"type": "postmark", **postmark_settings(postmark), "concurrency": 1, **(primary or {})},
        "smtp": {"type": "smtp", **smtp_settings(smtp), "concurrency": 1, **(secondary or {})},
    }
    extra = f"""
[channels.email]
providers = ["postmark"]
secondary = "smtp"

[breaker]
consecutive_failures = {FAILURES_TO_OPEN}
cooldown_s = {cooldown_s}
"""
    ws = make_workspace(tmp_path, providers=providers, channels={"inapp": "inapp"}, extra=extra)
    add_users(ws, email_users(n))
    order_campaign(ws, "c1", ["email"], [f"u{i}" for i in range(1, n + 1)])
    return ws


def audit(ws: Workspace) -> list[dict[str, Any]]:
    with ws.db() as conn:
        return [dict(row) for row in conn.execute("SELECT id, user_id, state, provider, attempts FROM deliveries")]


def attempts(ws: Workspace) -> list[tuple[str, str]]:
    """(provider, outcome) of every attempt, in the order they were started."""
    with ws.db() as conn:
        return [(row[0], row[1]) for row in conn.execute("SELECT provider, outcome FROM attempts ORDER BY id")]


def test_primary_answering_503_opens_its_breaker_and_the_secondary_carries_the_campaign(
    tmp_path: Path, postmark_api: FakePostmark, smtp_server: FakeSmtp
) -> None:
    n = 20
    # A cool-down longer than the run: once open, the breaker stays open.
    ws = email_failover_workspace(tmp_path, postmark_api, smtp_server, n=n, cooldown_s=60)
    postmark_api.fail_next(1000, UNAVAILABLE)

    result = ws.cli("broadcast", "c1.toml", "--json")

    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["state"] == "completed"
    rows = audit(ws)
    assert len(rows) == n
    assert {row["state"] for row in rows} == {"sent"}
    # The audit names the provider that actually carried each message.
    assert {row["provider"] for row in rows} == {"smtp"}
    assert len(smtp_server.messages) == n
    assert sorted(mail.rcpt_tos[0] for mail in smtp_server.messages) == sorted(u.email or "" for u in email_users(n))
    assert smtp_server.transactions == n
    # The primary got the failures that opened its breaker and at most one more request (routed
    # by the other worker before it opened), then nothing. Postmark has a batch API, so one
    # request may carry several messages: each posted message is one attempt in the audit.
    primary_requests = postmark_api.requests
    assert 1 <= len(primary_requests) <= FAILURES_TO_OPEN + 1
    assert postmark_api.sent == []
    tried = attempts(ws)
    on_primary = [outcome for provider, outcome in tried if provider == "postmark"]
    assert on_primary == ["transient"] * messages_posted(postmark_api)
    assert len(on_primary) >= FAILURES_TO_OPEN
    assert [outcome for provider, outcome in tried if provider == "smtp"] == ["sent"] * n


def messages_in(requests: list[RecordedRequest]) -> int:
    """Messages posted to Postmark: one per /email request, one per entry of an /email/batch."""
    return sum(len(request.json()) if request.path == "/email/batch" else 1 for request in requests)


def messages_posted(api: FakePostmark) -> int:
    return messages_in(api.requests)


async def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_traffic_returns_to_the_primary_once_it_recovers_and_the_cooldown_passes(
    tmp_path: Path, postmark_api: FakePostmark, smtp_server: FakeSmtp
) -> None:
    n, cooldown_s = 40, 0.6
    # The secondary is slow (5/s) so that the run spans the cool-down, and so that the primary's trial
    # request (a few ms; on a loaded machine up to a hundred or more) overlaps one secondary send at
    # the most (at 20/s, two overlapped it once in a full run under load); the primary is fast.
    ws = email_failover_workspace(
        tmp_path,
        postmark_api,
        smtp_server,
        n=n,
        cooldown_s=cooldown_s,
        primary={"rate": 200, "burst": 1},
        secondary={"rate": 5, "burst": 1},
    )
    postmark_api.fail_next(1000, UNAVAILABLE)
    ctx = open_context(ws)
    try:
        run = asyncio.create_task(broadcast(ctx, load_campaign(ws.root / "c1.toml")))
        # The secondary is used only while the primary's breaker is open.
        await wait_until(lambda: len(smtp_server.messages) >= 4, 10, "the secondary to take over")
        failed = postmark_api.requests
        postmark_api.clear()  # the primary recovers: no more 503s
        recovered_at = time.monotonic()
        outcome = await asyncio.wait_for(run, 30)
    finally:
        ctx.conn.close()

    assert isinstance(outcome, RunOutcome)
    assert outcome.state == "completed"
    assert 1 <= len(failed) <= FAILURES_TO_OPEN + 1
    assert messages_in(failed) >= FAILURES_TO_OPEN
    assert all(request.answer == "respond" for request in failed)  # each one answered 503
    # Nothing reached the primary during the cool-down; then a trial, then the rest of the campaign.
    after = postmark_api.requests
    assert after, "traffic never returned to the primary"
    assert after[0].received_monotonic - failed[-1].received_monotonic >= cooldown_s * 0.95
    assert after[0].received_monotonic >= recovered_at
    assert len(postmark_api.sent) == messages_posted(postmark_api)

    rows = audit(ws)
    assert {row["state"] for row in rows} == {"sent"}
    by_provider = {name: sum(1 for row in rows if row["provider"] == name) for name in ("postmark", "smtp")}
    assert by_provider == {"postmark": len(postmark_api.sent), "smtp": len(smtp_server.messages)}
    assert by_provider["postmark"] >= n // 3, by_provider
    # In attempt order the successes are: the secondary's, then the primary's once it is back
    # (at most one secondary send overlaps the primary's trial request).
    sent_via = [provider for provider, outcome in attempts(ws) if outcome == "sent"]
    first_primary = sent_via.index("postmark")
    assert set(sent_via[:first_primary]) == {"smtp"}
    # (That one overlapping secondary send may finish last: it waits for the slow secondary's token.)
    assert sent_via[first_primary:].count("smtp") <= 1


def sms_pool_workspace(tmp_path: Path, account_a: FakeTwilio, account_b: FakeTwilio, n: int) -> Workspace:
    providers = {
        "sms-a": {
            "type": "twilio",
            **account_a.provider_settings(timeout_s=2),
            "rate": 60,
            "burst": 1,
            "concurrency": 8,
        },
        "sms-b": {
            "type": "twilio",
            **account_b.provider_settings(timeout_s=2),
            "rate": 10,
            "burst": 1,
            "concurrency": 8,
        },
    }
    extra = """
[channels.sms]
providers = ["sms-a", "sms-b"]
weights = [3, 1]
"""
    ws = make_workspace(tmp_path, providers=providers, channels={"inapp": "inapp"}, extra=extra)
    add_users(ws, [User(user_id=f"u{i}", phone=f"+1201555{100 + i:04d}", locale="en") for i in range(1, n + 1)])
    order_campaign(ws, "c1", ["sms"], [f"u{i}" for i in range(1, n + 1)])
    return ws


def span_s(fake: FakeTwilio) -> float:
    times = [request.received_monotonic for request in fake.message_requests]
    return max(times) - min(times)


def test_weighted_pool_spreads_by_weight_and_each_account_keeps_its_own_rate(
    tmp_path: Path, twilio_api: FakeTwilio, twilio_api_b: FakeTwilio
) -> None:
    n = 60
    ws = sms_pool_workspace(tmp_path, twilio_api, twilio_api_b, n)

    result = ws.cli("broadcast", "c1.toml", "--json")

    assert result.exit_code == 0, result.output
    rows = audit(ws)
    assert {row["state"] for row in rows} == {"sent"}
    on_a = [row for row in rows if row["provider"] == "sms-a"]
    on_b = [row for row in rows if row["provider"] == "sms-b"]
    assert len(on_a) + len(on_b) == n
    # Each account's server saw exactly the messages the audit puts on it, from its own sender.
    assert len(twilio_api.sent) == len(twilio_api.message_requests) == len(on_a)
    assert len(twilio_api_b.sent) == len(twilio_api_b.message_requests) == len(on_b)
    assert {m["From"] for m in twilio_api.sent} == {twilio_api.from_number}
    assert {m["From"] for m in twilio_api_b.sent} == {twilio_api_b.from_number}
    # Weights 3:1 → 45 of 60 expected on sms-a; the bounds are about ±3.5 standard deviations.
    assert 33 <= len(on_a) <= 57, (len(on_a), len(on_b))
    # Each account is paced by its own bucket: sms-b never faster than its 10/s ...
    assert span_s(twilio_api_b) >= (len(on_b) - 1) / 10 * 0.85
    assert span_s(twilio_api) >= (len(on_a) - 1) / 60 * 0.85
    # ... and sms-a is not held to sms-b's rate.
    assert span_s(twilio_api) < (len(on_a) - 1) / 10 * 0.6


class MemoryLedger:
    """The Sender's Claims and OutcomeSink, kept in a list instead of the outbox."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []

    async def claim(self, dispatches: Sequence[Dispatch]) -> list[Verdict]:
        self.events.extend(("intent", d.envelope.delivery_id, d.provider) for d in dispatches)
        return [None for _ in dispatches]

    def record(self, outcome: Outcome) -> None:
        name = "retry" if outcome.kind is Kind.not_sent and outcome.retry_at is not None else str(outcome.kind)
        self.events.append((name, outcome.delivery_id, outcome.provider))


def email_envelope(delivery_id: int) -> Envelope:
    return Envelope(
        delivery_id=delivery_id,
        run_id="run_1",
        channel="email",
        user_id=f"u{delivery_id}",
        address=f"user{delivery_id}@example.com",
        template="order_shipped",
        template_version="v1",
        category="transactional",
        idempotency_key=f"k{delivery_id}",
        message_id=f"msg_{delivery_id}",
        parts={"subject": "Shipped", "text": "Your order shipped."},
    )


async def test_one_failed_batch_request_counts_as_one_breaker_failure(
    open_provider: OpenProvider, postmark_api: FakePostmark
) -> None:
    provider = await open_provider("postmark", "postmark", postmark_settings(postmark_api))
    breaker = CircuitBreaker(BreakerSettings(consecutive_failures=FAILURES_TO_OPEN, cooldown_s=60))
    recorder = MemoryLedger()
    sender = Sender(
        {"postmark": provider},
        {"postmark": TokenBucket(1000, 1000)},
        {"postmark": breaker},
        {"postmark": 1},
        RetrySettings(base_s=0.01, cap_s=0.01),
        recorder,
        recorder,
        lambda: False,
        lambda provider: False,
    )
    postmark_api.script(UNAVAILABLE)

    outcomes = await sender.transmit_batch([email_envelope(i) for i in range(1, 4)], "postmark", [1, 1, 1])

    assert [result.state for result in outcomes] == ["retry"] * 3
    assert [kind for kind, _, _ in recorder.events] == ["intent"] * 3 + ["retry"] * 3
    [request] = postmark_api.requests
    assert request.path == "/email/batch"
    # One request failed: one failure towards the threshold of three, so the breaker stays closed.
    assert breaker.state == "closed"
