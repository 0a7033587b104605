"""The cluster's parts against a real redis-server: shared token bucket, wire format, shared
idempotency claims and suppressions, in-doubt handling of claimed entries, `cluster status`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis
import typer
from typer.testing import CliRunner

from notifyctl.backends.redis.buckets import RedisTokenBucket
from notifyctl.backends.redis.claims import IdempotencyClaims, RedisIdempotencyStore, owner
from notifyctl.backends.redis.mirror import mirror_add, mirror_remove, suppression_reason
from notifyctl.backends.redis.status import cluster_status
from notifyctl.backends.redis.streams import (
    COORDINATOR_GROUP,
    WORKERS_GROUP,
    DeliveryMessage,
    Keys,
    OutcomeEvent,
    ensure_group,
    stream_entries,
)
from notifyctl.backends.redis.worker import Worker, WorkerOptions
from notifyctl.cli.cluster import register
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities
from notifyctl.settings import load_settings
from notifyctl.store.db import connect
from tests.redis_server import RedisServer, redis_server  # noqa: F401
from tests.test_cluster_run import cluster_workspace
from tests.webhook_sink import WebhookSink
from tests.workspace import SINK_SECRET, make_workspace

KEYS = Keys()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:  # noqa: F811
    connection = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    await connection.aclose()


def envelope(channel: str = "webhook", address: str = "https://example.com/hook", delivery_id: int = 7) -> Envelope:
    return Envelope(
        delivery_id=delivery_id,
        run_id="run_test",
        channel=channel,
        user_id="u1",
        address=address,
        template="welcome",
        template_version="v1",
        category="transactional",
        idempotency_key=f"key-{delivery_id}",
        message_id=f"msg_{delivery_id}",
        parts={"body": {"type": "user.welcome"}, "subject": "Hi", "text": "Hello"},
        signing_secrets=[SINK_SECRET, "whsec_b2xk"],
        client_cert="-----BEGIN CERTIFICATE-----",
    )


# --- shared token bucket ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "burst", "clients"),
    [pytest.param(40.0, 4, 3, id="three-clients"), pytest.param(25.0, 1, 2, id="no-burst")],
)
async def test_clients_together_never_exceed_rate_plus_burst(
    redis_server: RedisServer,  # noqa: F811
    rate: float,
    burst: int,
    clients: int,
) -> None:
    connections = [aioredis.Redis.from_url(redis_server.url) for _ in range(clients)]
    buckets = [RedisTokenBucket(c, "acct", rate, burst) for c in connections]
    granted: list[float] = []

    async def take(bucket: RedisTokenBucket, n: int) -> None:
        for _ in range(n):
            await bucket.acquire()
            granted.append(time.monotonic())

    per_task = int(rate * 1.5) // (clients * 4) + 1
    await asyncio.gather(*(take(b, per_task) for b in buckets for _ in range(4)))
    for connection in connections:
        await connection.aclose()
    granted.sort()
    busiest = max(sum(1 for t in granted if start <= t < start + 1.0) for start in granted)
    assert busiest <= rate + burst
    assert granted[-1] - granted[0] >= (len(granted) - burst) / rate - 0.05  # and it did not just stall


async def test_a_429_pauses_the_account_for_every_client(client: aioredis.Redis) -> None:
    first, second = RedisTokenBucket(client, "acct", 1000, 10), RedisTokenBucket(client, "acct", 1000, 10)
    await first.slow_down_now(0.4, 0)
    started = time.monotonic()
    await second.acquire()
    assert time.monotonic() - started >= 0.35


# --- wire format ----------------------------------------------------------------------------------


def test_a_delivery_message_carries_the_signing_secrets_the_envelope_dump_leaves_out() -> None:
    original = envelope()
    fields = DeliveryMessage(original, "webhook", 2, "notifyctl:outcomes:run_test:webhook", "db1").encode()
    assert "whsec_b2xk" not in fields["envelope"]  # the model never dumps them...
    decoded = DeliveryMessage.decode({k: str(v) for k, v in fields.items()})
    assert decoded.envelope.signing_secrets == original.signing_secrets  # ...the message carries them apart
    assert decoded.envelope.client_cert == original.client_cert
    assert decoded.envelope.model_dump() == original.model_dump()
    assert (decoded.provider, decoded.attempts_done, decoded.origin) == ("webhook", 2, "db1")


def test_outcome_events_round_trip() -> None:
    event = OutcomeEvent("dead", 3, attempt=2, code="400", effects=["suppress"], envelope={"a": 1}, due=1.5)
    assert OutcomeEvent.decode(event.encode()) == event
    assert event.final and not OutcomeEvent("retry", 3).final and OutcomeEvent("in_doubt_held", 3).final


# --- shared idempotency and suppressions ----------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "blocked"),
    [
        pytest.param(owner("db1", "run_a", 1), owner("db1", "run_a", 1), False, id="same-delivery-again"),
        pytest.param(owner("db1", "run_a", 1), owner("db1", "redrive_b", 9), False, id="redrive-same-database"),
        pytest.param(owner("db1", "run_a", 1), owner("db2", "run_c", 4), True, id="another-database"),
    ],
)
async def test_idempotency_claims_across_databases(
    client: aioredis.Redis, first: str, second: str, blocked: bool
) -> None:
    claims = IdempotencyClaims(client)
    assert await claims.claim("k", first, 60) is None
    assert (await claims.claim("k", second, 60)) == (first if blocked else None)


async def test_the_planner_sees_keys_claimed_by_other_databases_only(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    claims = IdempotencyClaims(client)
    await claims.claim("theirs", owner("db2", "run_c", 4), 60)
    await claims.claim("ours", owner("db1", "run_a", 1), 60)
    ws = make_workspace(tmp_path)
    ws.cli("users", "list")  # creates the database
    sync = redis.Redis.from_url(redis_server.url, decode_responses=True)
    conn = connect(ws.db_path)
    try:
        store = RedisIdempotencyStore(3600, sync, "db1")
        assert store.seen(conn, ["theirs", "ours", "new"]) == {"theirs": 4}
    finally:
        conn.close()
        sync.close()


@pytest.mark.parametrize(
    ("channel", "given", "stored"),
    [
        pytest.param("email", "  Someone@Example.COM ", "someone@example.com", id="email-normalised"),
        pytest.param("sms", "+1 (415) 555-2671", "+14155552671", id="phone-e164"),
        pytest.param("webhook", " https://example.com/hook ", "https://example.com/hook", id="webhook-url"),
    ],
)
async def test_mirrored_suppressions_match_envelope_addresses(
    client: aioredis.Redis, channel: str, given: str, stored: str
) -> None:
    assert await mirror_add(client, channel, given, "stop") == stored
    assert await suppression_reason(client, channel, stored) == "stop"
    await mirror_remove(client, channel, given)
    assert await suppression_reason(client, channel, stored) is None


# --- claimed entries whose attempt is in doubt ----------------------------------------------------


class NotIdempotent:
    """An email provider whose receiver cannot dedupe (like SES): an in-doubt send must be held."""

    name = "plain"
    capabilities = Capabilities(channels=("email",), idempotent=False)

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, envelope: Envelope) -> SendResult:
        self.sent.append(envelope.delivery_id)
        return SendResult(provider=self.name, provider_message_id=f"p-{envelope.delivery_id}")


async def abandon(client: aioredis.Redis, message: DeliveryMessage, attempt_state: str | None) -> None:
    """Publish a delivery, let a worker that then dies take it, and maybe record its intent."""
    channel = message.envelope.channel
    await ensure_group(client, KEYS.deliveries(channel), WORKERS_GROUP)
    await ensure_group(client, message.outcomes, COORDINATOR_GROUP)
    await client.xadd(KEYS.deliveries(channel), message.encode())
    await client.xreadgroup(WORKERS_GROUP, "dead-worker", {KEYS.deliveries(channel): ">"}, count=1)
    if attempt_state is not None:
        state = {"attempt": 1, "provider": message.provider, "state": attempt_state}
        await client.hset(KEYS.attempts("run_test"), str(message.envelope.delivery_id), orjson.dumps(state).decode())


async def outcome_kinds(client: aioredis.Redis, stream: str, want: int) -> list[OutcomeEvent]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = [OutcomeEvent.decode(f) for _, f in stream_entries(await client.xread({stream: "0"}))]
        if len(events) >= want:
            return events
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {want} events on {stream}")


async def run_worker_until(worker: Worker, client: aioredis.Redis, stream: str, want: int) -> list[OutcomeEvent]:
    task = asyncio.create_task(worker.run())
    try:
        return await outcome_kinds(client, stream, want)
    finally:
        worker.stop()
        await task


@pytest.mark.parametrize(
    ("attempt_state", "kinds", "sent"),
    [
        pytest.param("inflight", ["in_doubt_held"], [], id="intent-without-outcome-is-held"),
        pytest.param("retry", ["intent", "sent"], [7], id="after-a-retry-it-continues"),
        pytest.param(None, ["intent", "sent"], [7], id="never-attempted-it-is-sent"),
    ],
)
async def test_a_claimed_entry_for_a_provider_that_cannot_dedupe(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
    attempt_state: str | None,
    kinds: list[str],
    sent: list[int],
) -> None:
    settings = load_settings(make_workspace(tmp_path).config)
    outcomes = KEYS.outcomes("run_test", "email")
    await abandon(
        client, DeliveryMessage(envelope("email", "a@example.com"), "outbox", 0, outcomes, "db1"), attempt_state
    )
    plain = NotIdempotent()
    options = WorkerOptions(redis_server.url, channels=["email"], visibility_timeout_s=0.2)
    worker = Worker(settings, options, providers={"outbox": plain})
    events = await run_worker_until(worker, client, outcomes, len(kinds))
    assert [e.kind for e in events] == kinds
    assert plain.sent == sent
    if attempt_state == "retry":
        assert [e.attempt for e in events] == [2, 2]  # numbering goes on from the recorded attempt
    assert await client.xlen(KEYS.deliveries("email")) == 0  # acknowledged and removed: final
    assert await client.hlen(KEYS.attempts("run_test")) == 0


async def test_an_in_doubt_webhook_is_re_sent_with_the_same_webhook_id(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
    webhook_sink: WebhookSink,
) -> None:
    ws = cluster_workspace(tmp_path, webhook_sink, 1, rate=100, burst=5)
    outcomes = KEYS.outcomes("run_test", "webhook")
    message = DeliveryMessage(envelope("webhook", webhook_sink.url("/u1")), "webhook", 0, outcomes, "db1")
    await abandon(client, message, "inflight")
    options = WorkerOptions(redis_server.url, channels=["webhook"], visibility_timeout_s=0.2)
    events = await run_worker_until(Worker(load_settings(ws.config), options), client, outcomes, 3)
    assert [(e.kind, e.attempt) for e in events] == [("in_doubt", 1), ("intent", 2), ("sent", 2)]
    (request,) = webhook_sink.requests
    assert request.verified and request.webhook_id == "msg_7"


async def test_a_shared_suppression_skips_a_published_delivery(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = load_settings(make_workspace(tmp_path).config)
    outcomes = KEYS.outcomes("run_test", "email")
    await ensure_group(client, KEYS.deliveries("email"), WORKERS_GROUP)
    await client.xadd(
        KEYS.deliveries("email"),
        DeliveryMessage(envelope("email", "a@example.com"), "outbox", 0, outcomes, "db1").encode(),
    )
    await mirror_add(client, "email", "A@example.com", "unsubscribe")
    plain = NotIdempotent()
    worker = Worker(settings, WorkerOptions(redis_server.url, channels=["email"]), providers={"outbox": plain})
    (event,) = await run_worker_until(worker, client, outcomes, 1)
    assert (event.kind, event.reason) == ("skipped", "suppressed:unsubscribe")
    assert plain.sent == []


# --- cluster status -------------------------------------------------------------------------------


async def test_cluster_status_shows_workers_streams_and_rates(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    await client.set(
        KEYS.worker("w1"),
        orjson.dumps(
            {
                "name": "w1",
                "host": "h",
                "pid": 1,
                "channels": ["email"],
                "started": 0,
                "seen": time.time(),
                "in_progress": {"email": 1},
                "sent": 5,
                "failed": 0,
            }
        ).decode(),
        ex=10,
    )
    outcomes = KEYS.outcomes("run_test", "email")
    for delivery_id in (1, 2, 3):
        message = DeliveryMessage(envelope("email", "a@example.com", delivery_id), "outbox", 0, outcomes, "db1")
        await client.xadd(KEYS.deliveries("email"), message.encode())
    await ensure_group(client, KEYS.deliveries("email"), WORKERS_GROUP)
    await client.xreadgroup(WORKERS_GROUP, "w1", {KEYS.deliveries("email"): ">"}, count=1)
    bucket = RedisTokenBucket(client, "outbox", 100, 10)
    for _ in range(10):
        await bucket.acquire()

    snapshot = await cluster_status(redis_server.url)
    assert [w.name for w in snapshot.workers] == ["w1"]
    (stream,) = snapshot.streams
    assert (stream.channel, stream.depth, stream.waiting, stream.pending) == ("email", 3, 2, 1)
    assert stream.pending_by_consumer == {"w1": 1}
    (provider,) = snapshot.providers
    assert (provider.provider, provider.limit_per_s, provider.burst) == ("outbox", 100.0, 10.0)

    app = typer.Typer()
    app.command("noop")(lambda: None)
    register(app)
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["cluster", "status", "--redis", redis_server.url, "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.stdout)
    assert shown["streams"][0]["pending_by_consumer"] == {"w1": 1} and shown["workers"][0]["sent"] == 5
