"""Idempotency keys shared by every coordinator and worker.

Each coordinator's SQLite `idempotency` table stays the authority within its own database (the
planner dedupes there, and a redrive deliberately re-sends under the same key). Redis adds what
one database cannot see: a claim per key, taken by the worker right before the first attempt,
naming the database that owns it. A key claimed by another database within the window is a
duplicate (two teams' coordinators planned the same notification); the planner also skips such
keys early, reading Redis only, so a dry run writes nothing there.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import redis
import redis.asyncio as aioredis

from notifyctl.backends.redis.streams import Keys
from notifyctl.pipeline.idempotency import IdempotencyStore

# KEYS: claim. ARGV: owner, window (ms), database identity prefix.
# Returns "" when the claim is ours (new, or already held by our database), else the other owner.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(ARGV[3])) ~= ARGV[3] then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
"""


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


class IdempotencyClaims:
    """The workers' side: claim a key right before the first attempt."""

    def __init__(self, client: aioredis.Redis, keys: Keys | None = None) -> None:
        self.keys = keys or Keys()
        self._claim = client.register_script(_CLAIM)

    async def claim(self, key: str, claimant: str, window_s: float) -> str | None:
        """None when `claimant` may send under `key`; else the owner that already claimed it."""
        identity = claimant.split("|", 1)[0] + "|"
        holder = await self._claim(keys=[self.keys.idempotency(key)], args=[claimant, int(window_s * 1000), identity])
        return str(holder) or None
