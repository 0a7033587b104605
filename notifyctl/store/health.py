"""What `/healthz`, `/metrics` and `notifyctl doctor` read about the database: liveness, outbox
counts, provider latencies, and the file's integrity, journal mode and applied migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def ping(conn: sqlite3.Connection) -> None:
    """Raises when the database cannot answer a trivial query."""
    conn.execute("SELECT 1").fetchone()


def delivery_counts(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """(channel, state, deliveries) over the whole outbox, ordered."""
    rows = conn.execute("SELECT channel, state, count(*) FROM deliveries GROUP BY channel, state ORDER BY 1, 2")
    return [(str(channel), str(state), int(count)) for channel, state, count in rows]


def latency_totals(conn: sqlite3.Connection) -> list[tuple[str, int, float]]:
    """(provider, attempts with a latency, sum of their latencies in ms), by provider."""
    rows = conn.execute("""SELECT provider, count(*), COALESCE(sum(latency_ms), 0) FROM attempts
                           WHERE latency_ms IS NOT NULL GROUP BY provider ORDER BY provider""").fetchall()
    return [(str(provider), int(count), float(total)) for provider, count, total in rows]


def recent_latencies(conn: sqlite3.Connection, provider: str, limit: int) -> list[float]:
    """The latencies (ms) of a provider's latest `limit` attempts, newest first."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT latency_ms FROM attempts WHERE provider=? AND latency_ms IS NOT NULL ORDER BY id DESC LIMIT ?",
            (provider, limit),
        )
    ]


def open_read_only(path: Path) -> sqlite3.Connection:
    """The database file opened read-only, for inspection; never created or migrated."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)


def integrity_check(conn: sqlite3.Connection) -> list[str]:
    """SQLite's integrity check: ["ok"] or the problems it found."""
    return [row[0] for row in conn.execute("PRAGMA integrity_check")]


def journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
