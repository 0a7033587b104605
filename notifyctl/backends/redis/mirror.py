"""Suppressions shared by every worker: one Redis hash per channel, normalised address → reason.

The coordinator's policy check reads its SQLite list when it publishes; a suppression added after
that (a STOP reply, a one-click unsubscribe, a bounce, `notifyctl suppress add`) must also stop
messages already published, on every worker. Whatever adds a suppression to SQLite while a
cluster may be running calls `mirror_add`; workers check right before each send.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from notifyctl.addresses import normalize_address
from notifyctl.backends.redis.streams import Keys


async def mirror_add(
    client: aioredis.Redis, channel: str, address: str, reason: str = "manual", keys: Keys | None = None
) -> str:
    """Suppress `address` on `channel` for every worker at once; returns the normalised address."""
    normalized = normalize_address(channel, address)
    await client.hset((keys or Keys()).suppressed(channel), normalized, reason)
    return normalized


async def mirror_remove(client: aioredis.Redis, channel: str, address: str, keys: Keys | None = None) -> None:
    """Lift a shared suppression (after `directory.remove_suppression`)."""
    await client.hdel((keys or Keys()).suppressed(channel), normalize_address(channel, address))


async def suppression_reason(
    client: aioredis.Redis, channel: str, address: str, keys: Keys | None = None
) -> str | None:
    """The reason `address` is suppressed on `channel`, or None; `address` must already be normalised
    (envelopes carry normalised addresses)."""
    reason = await client.hget((keys or Keys()).suppressed(channel), address)
    return None if reason is None else str(reason)
