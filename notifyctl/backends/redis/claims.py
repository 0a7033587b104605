"""Claims in Redis: the worker's record of a provider call, and idempotency keys across databases.

Each coordinator's SQLite `idempotency` table stays the authority within its own database (the
planner dedupes there, and a redrive deliberately re-sends under the same key). Redis adds what
one database cannot see: a claim per key, taken by the worker right before the attempt, naming the
database that owns it. A key claimed by another database within the window is a duplicate (two
teams' coordinators planned the same notification); the planner also skips such keys early,
reading Redis only, so a dry run writes nothing there.

The same Lua call checks the revocations (an opt-out since the delivery was published) and records
the call: the claim is atomic with both, as the ledger's intent is with the change counter.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from notifyctl.backends.redis.streams import Keys
from notifyctl.pipeline.idempotency import IdempotencyStore


def database_identity(db_path: Path) -> str:
    """Names one outbox database across machines: its host and absolute path, hashed."""
    raw = f"{socket.gethostname()}:{db_path.resolve()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def owner(identity: str, run_id: str, delivery_id: int) -> str:
    return f"{identity}|{run_id}|{delivery_id}"


class RedisIdempotencyStore(IdempotencyStore):
    """The planner's key store: the SQLite table, plus claims other databases hold in Redis."""

    def __init__(self, window_s: float, client: redis.Redis, identity: str, keys: Keys | None = None) -> None:
        super().__init__(window_s)
        self.client = client
        self.identity = identity
        self.keys = keys or Keys()

    def seen(self, conn: sqlite3.Connection, keys: Iterable[str], now: float | None = None) -> dict[str, int]:
        keys = list(keys)
        found = super().seen(conn, keys, now)
        rest = [k for k in keys if k not in found]
        for start in range(0, len(rest), 1000):
            chunk = rest[start : start + 1000]
            values = self.client.mget([self.keys.idempotency(k) for k in chunk])
            for key, value in zip(chunk, values, strict=True):
                if isinstance(value, str) and not value.startswith(self.identity + "|"):
                    # The delivery id is the one in the database that planned it.
                    found[key] = int(value.rsplit("|", 1)[-1])
        return found


# KEYS: revoked (hash), calls (hash), then one idempotency key per item.
# ARGV: worker, identity prefix, window (ms), then per item: delivery id, attempt, claimant.
# Per item: "ok" (claimed: the call is recorded as this worker's), "r:<decision>" (revoked by an
# opt-out), or "d:<owner>" (the key is claimed by another database: a duplicate).
_CLAIM_BATCH = """
local answers = {}
local worker, prefix, window = ARGV[1], ARGV[2], ARGV[3]
for i = 1, #KEYS - 2 do
  local id, attempt, claimant = ARGV[1 + i * 3], ARGV[2 + i * 3], ARGV[3 + i * 3]
  local revoked = redis.call('HGET', KEYS[1], id)
  if revoked then
    answers[i] = 'r:' .. revoked
  else
    local current = redis.call('GET', KEYS[2 + i])
    if current and string.sub(current, 1, string.len(prefix)) ~= prefix then
      answers[i] = 'd:' .. current
    else
      redis.call('SET', KEYS[2 + i], claimant, 'PX', window)
      redis.call('HSET', KEYS[2], id .. ':' .. attempt, worker)
      answers[i] = 'ok'
    end
  end
end
return answers
"""


@dataclass(frozen=True)
class ClaimRequest:
    origin: str
    run_id: str
    delivery_id: int
    attempt: int
    idempotency_key: str


class CallClaims:
    """The workers' side of a claim, one Lua call per batch and database: unless an opt-out revoked
    the delivery or another database holds its idempotency key, record that this worker is calling
    the provider (`calls`), atomically. A worker that takes over an entry finds the call recorded:
    the earlier attempt's outcome is unknown."""

    def __init__(self, client: aioredis.Redis, worker: str, window_s: float, keys: Keys | None = None) -> None:
        self.keys = keys or Keys()
        self.worker = worker
        self.window_ms = int(window_s * 1000)
        self._script = client.register_script(_CLAIM_BATCH)

    async def claim(self, requests: list[ClaimRequest]) -> list[str]:
        """Per request: "ok", "r:<decision JSON>" or "d:<owner>" (see _CLAIM_BATCH)."""
        answers: list[str] = [""] * len(requests)
        by_origin: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            by_origin.setdefault(request.origin, []).append(i)
        for origin, indexes in by_origin.items():
            chosen = [requests[i] for i in indexes]
            keys = [self.keys.revoked(origin), self.keys.calls(origin)]
            keys += [self.keys.idempotency(r.idempotency_key) for r in chosen]
            args: list[Any] = [self.worker, origin + "|", self.window_ms]
            for r in chosen:
                args += [r.delivery_id, r.attempt, owner(origin, r.run_id, r.delivery_id)]
            found = await self._script(keys=keys, args=args)
            for i, answer in zip(indexes, found, strict=True):
                answers[i] = str(answer)
        return answers
