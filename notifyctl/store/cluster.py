"""The `cluster_runs` table: runs whose deliveries are published to Redis workers, and where."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from notifyctl.store.db import iso, transaction


@dataclass(frozen=True)
class ClusterRun:
    run_id: str
    redis_url: str
    prefix: str
    identity: str  # this database's name in Redis (its deliveries' origin)
    generation: str  # the Redis dataset the run published into


def attach(conn: sqlite3.Connection, run: ClusterRun) -> None:
    with transaction(conn):
        conn.execute(
            """INSERT INTO cluster_runs (run_id, redis_url, prefix, identity, generation, attached)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(run_id) DO UPDATE SET redis_url=excluded.redis_url, prefix=excluded.prefix,
                 identity=excluded.identity, generation=excluded.generation, attached=excluded.attached""",
            (run.run_id, run.redis_url, run.prefix, run.identity, run.generation, iso()),
        )


def detach(conn: sqlite3.Connection, run_id: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM cluster_runs WHERE run_id=?", (run_id,))


def get(conn: sqlite3.Connection, run_id: str) -> ClusterRun | None:
    row = conn.execute(
        "SELECT run_id, redis_url, prefix, identity, generation FROM cluster_runs WHERE run_id=?", (run_id,)
    ).fetchone()
    return None if row is None else ClusterRun(*row)


def attached(conn: sqlite3.Connection) -> list[ClusterRun]:
    """Runs with deliveries that may be at a worker now."""
    return [
        ClusterRun(*row)
        for row in conn.execute("SELECT run_id, redis_url, prefix, identity, generation FROM cluster_runs")
    ]


def published(conn: sqlite3.Connection, run_ids: list[str]) -> list[sqlite3.Row]:
    """The deliveries in flight of these runs (published to the workers, outcome not recorded), with
    what deciding them again needs."""
    if not run_ids:
        return []
    marks = ",".join("?" * len(run_ids))
    return conn.execute(
        f"""SELECT d.id, d.run_id, d.channel, d.category, d.address, u.user_id AS user_id, u.timezone, u.phone
            FROM deliveries d LEFT JOIN users u ON u.user_id = d.user_id
            WHERE d.run_id IN ({marks}) AND d.state = 'inflight'""",
        run_ids,
    ).fetchall()


def outstanding(conn: sqlite3.Connection, delivery_ids: list[int]) -> list[sqlite3.Row]:
    """Of these deliveries, those still in flight, with what deciding them again needs."""
    rows: list[sqlite3.Row] = []
    for start in range(0, len(delivery_ids), 500):
        chunk = delivery_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows.extend(
            conn.execute(
                f"""SELECT d.id, d.run_id, d.channel, d.category, d.address, u.user_id AS user_id, u.timezone, u.phone
                    FROM deliveries d LEFT JOIN users u ON u.user_id = d.user_id
                    WHERE d.id IN ({marks}) AND d.state = 'inflight'""",
                chunk,
            )
        )
    return rows
