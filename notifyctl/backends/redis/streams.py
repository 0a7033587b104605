"""Redis key names and the wire format of the two kinds of stream entries.

Deliveries (`{prefix}:deliveries:{channel}`, consumer group `workers`) carry a prepared envelope,
its signing secrets (which `Envelope.model_dump` leaves out on purpose, so that dead letters never
keep them) and where to report. Outcome events (`{prefix}:outcomes:{run}:{channel}`, consumer
group `coordinator`) carry what a worker did: intent, sent, retry, dead, skipped, in_doubt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from notifyctl.models import Envelope

WORKERS_GROUP = "workers"
COORDINATOR_GROUP = "coordinator"
COORDINATOR_CONSUMER = "coordinator"  # fixed: a resumed coordinator reads its predecessor's pending events
FINAL_KINDS = frozenset({"sent", "dead", "skipped", "in_doubt_held"})


# What redis-py's xadd accepts; every value notifyctl writes is text.
StreamFields = dict[Any, Any]
Entries = list[tuple[str, dict[str, str]]]


def stream_entries(answer: Any) -> Entries:
    """The entries of an XREADGROUP answer for one stream, whether RESP2 (a list of [stream,
    entries]) or RESP3 (a map); entries deleted since they were delivered come with no fields."""
    if not answer:
        return []
    groups = list(answer.values()) if isinstance(answer, dict) else [entries for _stream, entries in answer]
    found: Entries = []
    for entries in groups:
        for entry in entries or []:
            entry_id, fields = entry[0], entry[1]
            found.append((str(entry_id), dict(fields or {})))
    return found


def claimed_entries(answer: Any) -> Entries:
    """The entries of an XAUTOCLAIM answer ([next start, entries, deleted ids])."""
    return [(str(entry[0]), dict(entry[1] or {})) for entry in (answer[1] if answer else [])]


@dataclass(frozen=True)
class Keys:
    """Every Redis key notifyctl uses, under one prefix."""

    prefix: str = "notifyctl"

    def deliveries(self, channel: str) -> str:
        return f"{self.prefix}:deliveries:{channel}"

    def outcomes(self, run_id: str, channel: str) -> str:
        return f"{self.prefix}:outcomes:{run_id}:{channel}"

    def published(self, run_id: str) -> str:
        """Hash delivery id → channel: published and not yet finally recorded by the coordinator."""
        return f"{self.prefix}:run:{run_id}:published"

    def attempts(self, run_id: str) -> str:
        """Hash delivery id → last attempt (number, provider, inflight|retry), for in-doubt detection."""
        return f"{self.prefix}:run:{run_id}:attempts"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def suppressed(self, channel: str) -> str:
        return f"{self.prefix}:suppressed:{channel}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def rate(self, provider: str) -> str:
        return f"{self.prefix}:rate:{provider}"


def connect(url: str) -> aioredis.Redis:
    """An asyncio client that returns str (every value notifyctl stores is text)."""
    client: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True)
    return client


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) unless it exists; new groups start at the beginning."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass
class DeliveryMessage:
    """One delivery published for the workers."""

    envelope: Envelope
    provider: str
    attempts_done: int
    outcomes: str  # the stream to report to
    origin: str  # the coordinator database's identity, for shared idempotency claims

    def encode(self) -> StreamFields:
        return {
            "v": "1",
            "envelope": self.envelope.model_dump_json(),
            # Explicitly: the model excludes them from every dump, and the worker needs them to sign.
            "secrets": orjson.dumps(self.envelope.signing_secrets).decode(),
            "cert": self.envelope.client_cert or "",
            "provider": self.provider,
            "attempts": str(self.attempts_done),
            "outcomes": self.outcomes,
            "origin": self.origin,
        }

    @classmethod
    def decode(cls, fields: dict[str, str]) -> DeliveryMessage:
        envelope = Envelope.model_validate_json(fields["envelope"])
        envelope.signing_secrets = list(orjson.loads(fields.get("secrets") or "[]"))
        envelope.client_cert = fields.get("cert") or None
        return cls(
            envelope, fields["provider"], int(fields.get("attempts") or 0), fields["outcomes"], fields.get("origin", "")
        )


@dataclass
class OutcomeEvent:
    """What a worker reports about one delivery.

    kind: intent | sent | retry | dead | skipped | in_doubt (attempt unknown, re-sent) |
    in_doubt_held (attempt unknown, held for the operator).
    """

    kind: str
    delivery_id: int
    attempt: int = 0
    provider: str = ""
    latency_ms: float = 0.0
    provider_message_id: str | None = None
    outcome: str | None = None  # attempts.outcome: transient, rate_limited, permanent
    code: str | None = None
    error_class: str | None = None
    message: str | None = None
    due: float | None = None
    reason: str | None = None
    envelope: dict[str, Any] | None = None  # dead letters keep it (without secrets)
    effects: list[str] = field(default_factory=list)  # suppress, remove_device, disable_endpoint
    worker: str = ""

    @property
    def final(self) -> bool:
        return self.kind in FINAL_KINDS

    def encode(self) -> StreamFields:
        return {"e": orjson.dumps(self.__dict__).decode()}

    @classmethod
    def decode(cls, fields: dict[str, str]) -> OutcomeEvent:
        return cls(**orjson.loads(fields["e"]))
