"""What resuming reads: the runs that may be due, deferred deliveries now due, pinned templates."""

from __future__ import annotations

import sqlite3


def unfinished_runs(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Runs interrupted, running, scheduled or waiting: rows (run_id, state, send_at), oldest first."""
    return list(
        conn.execute(
            """SELECT run_id, state, send_at FROM runs
           WHERE state IN ('interrupted', 'running', 'scheduled', 'waiting') ORDER BY created"""
        )
    )


def has_due_deferred(conn: sqlite3.Connection, run_id: str, now: str) -> bool:
    """Whether a run has a deferred delivery due at `now` (ISO)."""
    return bool(
        conn.execute(
            "SELECT 1 FROM deliveries WHERE run_id=? AND state='deferred' AND defer_until<=? LIMIT 1",
            (run_id, now),
        ).fetchone()
    )


def pinned_templates(conn: sqlite3.Connection, run_id: str) -> set[tuple[str, str]]:
    """(template, version) of a run's deliveries still to send."""
    return {
        (t, v)
        for t, v in conn.execute(
            """SELECT DISTINCT template, template_version FROM deliveries
           WHERE run_id=? AND state IN ('pending', 'inflight', 'deferred')""",
            (run_id,),
        )
    }
