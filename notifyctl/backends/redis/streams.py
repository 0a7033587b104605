"""Redis key names, and the wire format of the deliveries the coordinator publishes.

Deliveries (`{prefix}:deliveries:{channel}`, consumer group `workers`) carry a prepared envelope,
its signing secrets and the recipient's time zone and phone (which `Envelope.model_dump` leaves out on
purpose, so that dead letters never keep them), and where to report. Outcomes
(`{prefix}:outcomes:{run}:{channel}`, consumer group `coordinator`) carry pipeline/outcomes.py's
Outcome records as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from notifyctl.models import Envelope

WORKERS_GROUP = "workers"
COORDINATOR_GROUP = "coordinator"
COORDINATOR_CONSUMER = "coordinator"  # fixed: a resumed coordinator reads its predecessor's pending outcomes

# What redis-py's xadd accepts; every value notifyctl writes is text.
StreamFields = dict[Any, Any]
Entries = list[tuple[str, dict[str, str]]]


def stream_entries(answer: Any) -> Entries:
    """The entries of an XREADGROUP answer, whether RESP2 (a list of [stream, entries]) or RESP3 (a
    map); entries deleted since they were delivered come with no fields."""
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

    @property
    def generation(self) -> str:
        """A random id set by the first coordinator on this Redis dataset: a different or missing one
        means the data a run published is gone (a restart without persistence, a flush)."""
        return f"{self.prefix}:generation"

    def deliveries(self, channel: str) -> str:
        return f"{self.prefix}:deliveries:{channel}"

    def outcomes(self, run_id: str, channel: str) -> str:
        return f"{self.prefix}:outcomes:{run_id}:{channel}"

    def published(self, run_id: str) -> str:
        """Hash delivery id → channel: published, final outcome not yet recorded by the coordinator."""
        return f"{self.prefix}:run:{run_id}:published"

    def coordinator(self, run_id: str) -> str:
        """The run's coordinator heartbeat (expires when it stops beating)."""
        return f"{self.prefix}:run:{run_id}:coordinator"

    def calls(self, origin: str) -> str:
        """Hash "delivery:attempt" → worker: a worker's intent, written before its provider call."""
        return f"{self.prefix}:calls:{origin}"

    def revoked(self, origin: str) -> str:
        """Hash delivery id → the decision (JSON) that withdraws it: written by every opt-out."""
        return f"{self.prefix}:revoked:{origin}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def rate(self, provider: str) -> str:
        return f"{self.prefix}:rate:{provider}"


def connect(url: str) -> aioredis.Redis:
    """An asyncio client that returns str (every value notifyctl stores is text), failing fast
    when Redis is away (the callers reconnect with backoff)."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2.0, health_check_interval=10
    )
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
    """One delivery published for the workers: attempt `attempt` of it, through `provider`."""

    envelope: Envelope
    provider: str
    attempt: int
    outcomes: str  # the stream to report to
    origin: str  # the coordinator database's identity (idempotency claims, calls, revocations)

    def encode(self) -> StreamFields:
        return {
            "v": "2",
            "envelope": self.envelope.model_dump_json(),
            # Explicitly: the model excludes them from every dump, and the worker needs them to sign.
            "secrets": orjson.dumps(self.envelope.signing_secrets).decode(),
            "cert": self.envelope.client_cert or "",
            "provider": self.provider,
            "attempt": str(self.attempt),
            "outcomes": self.outcomes,
            "origin": self.origin,
            "tz": self.envelope.recipient_timezone or "",
            "phone": self.envelope.recipient_phone or "",
        }

    @classmethod
    def decode(cls, fields: dict[str, str]) -> DeliveryMessage:
        envelope = Envelope.model_validate_json(fields["envelope"])
        envelope.signing_secrets = list(orjson.loads(fields.get("secrets") or "[]"))
        envelope.client_cert = fields.get("cert") or None
        envelope.recipient_timezone = fields.get("tz") or None
        envelope.recipient_phone = fields.get("phone") or None
        return cls(envelope, fields["provider"], int(fields["attempt"]), fields["outcomes"], fields["origin"])
