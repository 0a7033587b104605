"""Revocations: an opt-out reaches every worker before its next message.

A delivery published to the workers was decided by the coordinator's policy when its intent
committed. An opt-out committed after that (STOP, one-click unsubscribe, bounce, complaint,
`prefs set --off`, `suppress add`, `users forget`, consent withdrawn) must still stop it. So every
process that writes an opt-out to the database decides the run's published deliveries again, on
its own transaction (which sees the opt-out), and writes a revocation for each one that may no
longer go out into Redis (`{prefix}:revoked:{database}`: delivery id → decision) before it
commits; the SQLite write lock is held meanwhile, so no intent can commit in between unseen. A
worker's claim reads the revocation in the same Lua call that records its provider call
(claims.py): an opt-out either comes first and withdraws the delivery, or finds its call already
made. The coordinator writes the same revocations whenever the directory's change counter moves (a
backstop for a writer that could not reach Redis).

Revocations name delivery ids only: no address and no user id goes to Redis for this.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from datetime import datetime

import orjson
import redis

from notifyctl.backends.redis.streams import Keys
from notifyctl.models import Decision
from notifyctl.policy.decide import Policy
from notifyctl.settings import Settings
from notifyctl.store import cluster

log = logging.getLogger("notifyctl.redis.revocations")
REVOCATION_TTL_S = 7 * 24 * 3600  # longer than any delivery stays at a worker


def encode(decision: Decision) -> str:
    return orjson.dumps(decision.model_dump(mode="json")).decode()


def decode(raw: str) -> Decision:
    return Decision.model_validate_json(raw)


def revoked(policy: Policy, rows: Iterable[sqlite3.Row], now: datetime) -> dict[int, Decision]:
    """Of these published deliveries, those policy no longer lets go out, with the decision."""
    found: dict[int, Decision] = {}
    for row in rows:
        decision = policy.decide(
            channel=row["channel"],
            category=row["category"],
            address=row["address"],
            user_id=row["user_id"],
            timezone=row["timezone"],
            phone=row["phone"],
            now=now,
        )
        if decision.action != "send":
            found[int(row["id"])] = decision
    return found


def revoke_published(
    conn: sqlite3.Connection, settings: Settings, now: datetime, forced: dict[int, Decision] | None = None
) -> int:
    """In an opt-out's write transaction, after its change and before its COMMIT: decide every
    published delivery of this database again and revoke, in each Redis, those that may no longer
    go out (and those in `forced`, whatever policy says). Returns how many were revoked. A Redis it
    cannot reach is logged, not fatal: the opt-out is kept, and the coordinator's backstop writes the
    revocation once Redis is back."""
    runs = cluster.attached(conn)
    if not runs:
        return 0
    policy = Policy(settings, conn)
    forced = forced or {}
    total = 0
    by_redis: dict[tuple[str, str, str], list[str]] = {}
    for run in runs:
        by_redis.setdefault((run.redis_url, run.prefix, run.identity), []).append(run.run_id)
    for (url, prefix, identity), run_ids in by_redis.items():
        published = cluster.published(conn, run_ids)
        decisions = revoked(policy, published, now)
        decisions.update({row["id"]: forced[row["id"]] for row in published if row["id"] in forced})
        if not decisions:
            continue
        try:
            client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=1.0, socket_timeout=2.0)
            try:
                push(client, Keys(prefix), identity, decisions)
            finally:
                client.close()
        except redis.RedisError as exc:
            log.warning("could not revoke published deliveries", extra={"count": len(decisions), "error": str(exc)})
            continue
        total += len(decisions)
    return total


def push(client: redis.Redis, keys: Keys, identity: str, decisions: dict[int, Decision]) -> None:
    name = keys.revoked(identity)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(name, mapping={str(i): encode(d) for i, d in decisions.items()})
        pipe.expire(name, REVOCATION_TTL_S)
        pipe.execute()
