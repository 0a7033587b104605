"""`notifyctl consume`'s lag per partition, as of its last commit (read by `serve`'s /metrics)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from notifyctl.store.db import transaction


@dataclass(frozen=True)
class LagRow:
    group: str
    topic: str
    p: int  # the partition
    committed: int
    end: int
    updated: float  # time.time()

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


def record(conn: sqlite3.Connection, group: str, topic: str, offsets: dict[int, tuple[int, int]]) -> None:
    """{partition: (committed, end offset)} of one group, now."""
    now = time.time()
    with transaction(conn):
        conn.executemany(
            "INSERT OR REPLACE INTO kafka_lag VALUES (?, ?, ?, ?, ?, ?)",
            [(group, topic, partition, committed, end, now) for partition, (committed, end) in offsets.items()],
        )


def recent(conn: sqlite3.Connection, max_age_s: float) -> list[LagRow]:
    """The partitions some consumer committed on within `max_age_s` (older rows: no consumer runs)."""
    rows = conn.execute(
        "SELECT consumer_group, topic, partition, committed, end_offset, updated FROM kafka_lag WHERE updated >= ? "
        "ORDER BY consumer_group, topic, partition",
        (time.time() - max_age_s,),
    )
    return [LagRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]
