"""The cluster's parts against a real redis-server: the shared token bucket, the wire format, the
claims a worker makes (revocations, idempotency keys of other databases, the call recorded), the
worker's handling of entries taken over from a dead worker and of poison entries, `cluster status`."""

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
from notifyctl.backends.redis.claims import CallClaims, ClaimRequest, RedisIdempotencyStore, owner
from notifyctl.backends.redis.revocations import encode
from notifyctl.backends.redis.status import cluster_status
from notifyctl.backends.redis.streams import (
    COORDINATOR_GROUP,
    WORKERS_GROUP,
    DeliveryMessage,
    Keys,
    ensure_group,
    stream_entries,
)
from notifyctl.backends.redis.worker import Worker, WorkerOptions
from notifyctl.cli.cluster import register
from notifyctl.models import Decision, Envelope, SendResult
from notifyctl.pipeline.outcomes import Kind, Outcome
from notifyctl.providers.base import Capabilities
from notifyctl.settings import load_settings
from notifyctl.store.db import connect
from tests.redis_server import RedisServer, redis_server  # noqa: F401
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
        recipient_timezone="Europe/Paris",
        recipient_phone="+33612345678",
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


async def test_one_request_takes_the_tokens_of_every_waiter(client: aioredis.Redis) -> None:
    """Concurrent acquires share the script calls: twenty waiters, not twenty round trips each."""
    bucket = RedisTokenBucket(client, "acct", 1000, 50)
    calls = 0
    take = bucket._take

    async def counted(wanted: int) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        return await take(wanted)

    bucket._take = counted  # type: ignore[method-assign]
    await asyncio.gather(*(bucket.acquire() for _ in range(20)))
    assert calls <= 2


# --- wire format ----------------------------------------------------------------------------------


def test_a_delivery_message_carries_what_the_envelope_dump_leaves_out() -> None:
    original = envelope()
    fields = DeliveryMessage(original, "webhook", 2, "notifyctl:outcomes:run_test:webhook", "db1").encode()
    assert "whsec_b2xk" not in fields["envelope"] and "Europe/Paris" not in fields["envelope"]  # never dumped...
    decoded = DeliveryMessage.decode({k: str(v) for k, v in fields.items()})
    assert decoded.envelope.signing_secrets == original.signing_secrets  # ...the message carries them apart
    assert decoded.envelope.client_cert == original.client_cert
    assert (decoded.envelope.recipient_timezone, decoded.envelope.recipient_phone) == ("Europe/Paris", "+33612345678")
    assert decoded.envelope.model_dump() == original.model_dump()
    assert (decoded.provider, decoded.attempt, decoded.origin) == ("webhook", 2, "db1")


def test_outcomes_round_trip_through_a_stream_entry() -> None:
    outcome = Outcome(
        Kind.rejected, "run_test", 3, 2, "twilio", "sms", code="21610", effects=("suppress",), envelope={"a": 1}
    )
    assert Outcome.from_fields(outcome.as_fields()) == outcome
    assert outcome.final and not Outcome(Kind.not_sent, "r", 3, 1, "p", "sms", retry_at=1.0).final


# --- claims --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "blocked"),
    [
        pytest.param(("db1", "run_a", 1), ("db1", "run_a", 1), False, id="same-delivery-again"),
        pytest.param(("db1", "run_a", 1), ("db1", "redrive_b", 9), False, id="redrive-same-database"),
        pytest.param(("db1", "run_a", 1), ("db2", "run_c", 4), True, id="another-database"),
    ],
)
async def test_idempotency_keys_across_databases(
    client: aioredis.Redis, first: tuple[str, str, int], second: tuple[str, str, int], blocked: bool
) -> None:
    claims = CallClaims(client, "w1", 60)
    assert await claims.claim([ClaimRequest(*first, 1, "k")]) == ["ok"]
    (answer,) = await claims.claim([ClaimRequest(*second, 1, "k")])
    assert answer == (f"d:{owner(*first)}" if blocked else "ok")


async def test_a_claim_records_the_call_unless_the_delivery_was_revoked(client: aioredis.Redis) -> None:
    await client.hset(KEYS.revoked("db1"), "8", encode(Decision.skip("preference_off")))
    claims = CallClaims(client, "w1", 60)
    answers = await claims.claim([ClaimRequest("db1", "run_a", 7, 1, "k7"), ClaimRequest("db1", "run_a", 8, 1, "k8")])
    assert answers[0] == "ok" and answers[1].startswith("r:")
    assert Decision.model_validate_json(answers[1][2:]).reason == "preference_off"
    assert await client.hgetall(KEYS.calls("db1")) == {"7:1": "w1"}  # the revoked one was not called
    assert await client.get(KEYS.idempotency("k8")) is None


async def test_the_planner_sees_keys_claimed_by_other_databases_only(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    claims = CallClaims(client, "w1", 60)
    await claims.claim([ClaimRequest("db2", "run_c", 4, 1, "theirs"), ClaimRequest("db1", "run_a", 1, 1, "ours")])
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


# --- a worker's entries --------------------------------------------------------------------------


class Plain:
    """An email provider whose receiver cannot dedupe (like SES)."""

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


async def publish(client: aioredis.Redis, message: DeliveryMessage, taken_by: str | None = None) -> None:
    """Publish a delivery; with `taken_by`, a worker (that then dies) has read it."""
    stream = KEYS.deliveries(message.envelope.channel)
    await ensure_group(client, stream, WORKERS_GROUP)
    await ensure_group(client, message.outcomes, COORDINATOR_GROUP)
    await client.xadd(stream, message.encode())
    if taken_by is not None:
        await client.xreadgroup(WORKERS_GROUP, taken_by, {stream: ">"}, count=1)


async def outcomes_of(client: aioredis.Redis, stream: str, want: int) -> list[Outcome]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [Outcome.from_fields(f) for _, f in stream_entries(await client.xread({stream: "0"}))]
        if len(found) >= want:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {want} outcomes on {stream}")


async def run_worker_until(worker: Worker, client: aioredis.Redis, stream: str, want: int) -> list[Outcome]:
    task = asyncio.create_task(worker.run())
    try:
        return await outcomes_of(client, stream, want)
    finally:
        worker.stop()
        await task


def plain_worker(tmp_path: Path, url: str, **options: object) -> tuple[Worker, Plain]:
    settings = load_settings(make_workspace(tmp_path).config)
    plain = Plain()
    worker_options = WorkerOptions(url, channels=["email"], visibility_timeout_s=0.2, **options)  # type: ignore[arg-type]
    return Worker(settings, worker_options, providers={"outbox": plain}), plain


@pytest.mark.parametrize(
    ("call_recorded", "kind", "sent"),
    [
        pytest.param(True, Kind.unknown, [], id="its-call-was-recorded-outcome-unknown"),
        pytest.param(False, Kind.sent, [7], id="never-called-it-is-sent"),
    ],
)
async def test_an_entry_taken_over_from_a_dead_worker(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
    call_recorded: bool,
    kind: Kind,
    sent: list[int],
) -> None:
    stream = KEYS.outcomes("run_test", "email")
    await publish(client, DeliveryMessage(envelope("email", "a@example.com"), "outbox", 1, stream, "db1"), "dead")
    if call_recorded:
        await client.hset(KEYS.calls("db1"), "7:1", "dead")
    worker, plain = plain_worker(tmp_path, redis_server.url)
    (outcome,) = await run_worker_until(worker, client, stream, 1)
    assert (outcome.kind, outcome.attempt) == (kind, 1)
    assert plain.sent == sent  # in doubt: not re-sent here (the coordinator decides, by provider)
    assert await client.xlen(KEYS.deliveries("email")) == 0  # acknowledged and removed with its outcome
    assert await client.hlen(KEYS.calls("db1")) == 0


async def test_a_revoked_delivery_is_withdrawn_without_a_call(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    stream = KEYS.outcomes("run_test", "email")
    await publish(client, DeliveryMessage(envelope("email", "a@example.com"), "outbox", 1, stream, "db1"))
    await client.hset(KEYS.revoked("db1"), "7", encode(Decision.skip("suppressed:unsubscribe")))
    worker, plain = plain_worker(tmp_path, redis_server.url)
    (outcome,) = await run_worker_until(worker, client, stream, 1)
    assert (outcome.kind, outcome.state, outcome.reason) == (Kind.withdrawn, "skipped", "suppressed:unsubscribe")
    assert plain.sent == []


async def test_a_poison_entry_goes_to_the_dead_letters(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An entry that keeps killing the workers that take it (never an outcome) is reported dead."""
    stream = KEYS.outcomes("run_test", "email")
    message = DeliveryMessage(envelope("email", "a@example.com"), "outbox", 1, stream, "db1")
    await publish(client, message, "dead-1")
    for name in ("dead-2", "dead-3"):
        await client.xclaim(KEYS.deliveries("email"), WORKERS_GROUP, name, 0, [await _only_entry(client)])
    worker, plain = plain_worker(tmp_path, redis_server.url, max_deliveries=2)
    (outcome,) = await run_worker_until(worker, client, stream, 1)
    assert (outcome.kind, outcome.code) == (Kind.rejected, "poison")
    assert outcome.envelope is not None  # the dead letter keeps it
    assert plain.sent == []


async def _only_entry(client: aioredis.Redis) -> str:
    (entry,) = await client.xrange(KEYS.deliveries("email"))
    return str(entry[0])


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


async def test_cluster_status_says_why_a_run_cannot_move(
    client: aioredis.Redis,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    await client.hset(KEYS.published("r1"), mapping={"1": "webhook", "2": "webhook"})
    (run,) = (await cluster_status(redis_server.url)).runs
    assert (run.run_id, run.at_workers, run.coordinator_seen_s) == ("r1", 2, None)
    assert run.stalled is not None and run.stalled.startswith("no coordinator")

    beat = {"run_id": "r1", "channels": ["webhook"], "seen": time.time()}
    await client.set(KEYS.coordinator("r1"), orjson.dumps(beat).decode(), ex=10)
    (run,) = (await cluster_status(redis_server.url)).runs
    assert run.stalled == "no worker alive"

    worker = {"name": "w1", "host": "h", "pid": 1, "channels": ["email"], "started": 0, "seen": time.time(),
              "in_progress": {}, "sent": 0, "failed": 0}  # fmt: skip
    await client.set(KEYS.worker("w1"), orjson.dumps(worker).decode(), ex=10)
    (run,) = (await cluster_status(redis_server.url)).runs
    assert run.stalled == "no worker alive for channel webhook"

    worker["channels"] = ["email", "webhook"]
    await client.set(KEYS.worker("w1"), orjson.dumps(worker).decode(), ex=10)
    (run,) = (await cluster_status(redis_server.url)).runs
    assert run.stalled is None
