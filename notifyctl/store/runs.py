"""The runs table: a broadcast's, send's or redrive's row (template, channels, state, plan cursor),
its counts and reasons, and new run ids. The deliveries' state machine is store/outbox.py."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifyctl.states import RunState
from notifyctl.store.db import dumps, iso, loads, transaction


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}_{datetime.now().strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:6]}"


@dataclass
class Run:
    run_id: str
    kind: str
    campaign_id: str | None
    template: str
    template_version: str
    category: str
    channels: list[str]
    state: RunState
    data: dict[str, Any]
    audience_path: str | None
    audience_sha256: str | None
    plan_offset: int
    plan_line: int
    planned: bool
    send_at: str | None
    created: str
    started: str | None
    finished: str | None
    options: dict[str, Any]
    end_reason: str | None = None  # why it ended failed or cancelled

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        return cls(
            run_id=row["run_id"],
            kind=row["kind"],
            campaign_id=row["campaign_id"],
            template=row["template"],
            template_version=row["template_version"],
            category=row["category"],
            channels=loads(row["channels"]),
            state=RunState(row["state"]),
            data=loads(row["data"]) or {},
            audience_path=row["audience_path"],
            audience_sha256=row["audience_sha256"],
            plan_offset=row["plan_offset"],
            plan_line=row["plan_line"],
            planned=bool(row["planned"]),
            send_at=row["send_at"],
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
            options=loads(row["options"]) or {},
            end_reason=row["end_reason"],
        )


def create_run(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    kind: str,
    template: str,
    template_version: str,
    category: str,
    channels: Sequence[str],
    state: RunState,
    data: dict[str, Any] | None = None,
    campaign_id: str | None = None,
    audience_path: str | None = None,
    audience_sha256: str | None = None,
    send_at: str | None = None,
    options: dict[str, Any] | None = None,
) -> Run:
    with transaction(conn):
        conn.execute(
            """INSERT INTO runs (run_id, kind, campaign_id, template, template_version, category, channels, state,
                 data, audience_path, audience_sha256, send_at, created, options)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                run_id,
                kind,
                campaign_id,
                template,
                template_version,
                category,
                dumps(list(channels)),
                state,
                dumps(data or {}),
                audience_path,
                audience_sha256,
                send_at,
                iso(),
                dumps(options or {}),
            ),
        )
    run = get_run(conn, run_id)
    assert run is not None
    return run


def get_run(conn: sqlite3.Connection, run_id: str) -> Run | None:
    row = conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
    return Run.from_row(row) if row else None


# A run in one of these states reads its input file no more (later releases may add others).
_INPUT_READ_NO_MORE = ("completed", "completed_with_failures", "failed", "cancelled")


def input_needed(conn: sqlite3.Connection, audience_path: str) -> bool:
    """Whether a run has yet to plan from this input file (resume reads the rest from it)."""
    marks = ",".join("?" * len(_INPUT_READ_NO_MORE))
    row = conn.execute(
        f"SELECT 1 FROM runs WHERE audience_path=? AND planned=0 AND state NOT IN ({marks}) LIMIT 1",
        (audience_path, *_INPUT_READ_NO_MORE),
    ).fetchone()
    return row is not None


def list_runs(conn: sqlite3.Connection, limit: int = 50) -> list[Run]:
    return [Run.from_row(r) for r in conn.execute("SELECT * FROM runs ORDER BY created DESC LIMIT ?", (limit,))]


def set_run_state(
    conn: sqlite3.Connection, run_id: str, state: RunState, *, started: bool = False, finished: bool = False
) -> None:
    sets = ["state=?", "end_reason=NULL"]  # a failed run resumed by name: the reason is history
    params: list[Any] = [state]
    if started:
        sets.append("started=COALESCE(started, ?)")
        params.append(iso())
    if finished:
        sets.append("finished=?")
        params.append(iso())
    params.append(run_id)
    conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id=?", params)


def end_run(conn: sqlite3.Connection, run_id: str, state: RunState, reason: str) -> None:
    """A run ended before its deliveries did (failed, cancelled), and why."""
    conn.execute("UPDATE runs SET state=?, end_reason=?, finished=? WHERE run_id=?", (state, reason, iso(), run_id))


def cancel_unsent(conn: sqlite3.Connection, run_id: str) -> tuple[int, int]:
    """A cancelled run's deliveries not yet sent: pending and deferred ones are skipped (cancelled);
    those left in flight by a crash may have reached the provider, so they are held in doubt.
    Returns (skipped, held); in the caller's transaction."""
    now = iso()
    skipped = conn.execute(
        """UPDATE deliveries SET state='skipped', reason='cancelled', defer_until=NULL, next_attempt_at=NULL,
             updated=? WHERE run_id=? AND state IN ('pending', 'deferred')""",
        (now, run_id),
    ).rowcount
    conn.execute(
        """UPDATE attempts SET outcome='in_doubt' WHERE outcome='inflight' AND delivery_id IN
             (SELECT id FROM deliveries WHERE run_id=? AND state='inflight')""",
        (run_id,),
    )
    held = conn.execute(
        """UPDATE deliveries SET state='in_doubt', in_doubt=1, reason='outcome_unknown', updated=?
           WHERE run_id=? AND state='inflight'""",
        (now, run_id),
    ).rowcount
    return skipped, held


def on_cluster(conn: sqlite3.Connection, run_id: str) -> bool:
    """Whether the run was published to a Redis cluster (its workers may hold its deliveries)."""
    return conn.execute("SELECT 1 FROM cluster_runs WHERE run_id=?", (run_id,)).fetchone() is not None


def stuck_or_overdue(conn: sqlite3.Connection, now_iso: str) -> list[sqlite3.Row]:
    """Runs `running` (candidates for stuck: the caller checks their lock) and runs scheduled
    before `now_iso`: rows (run_id, state, send_at, created)."""
    return list(
        conn.execute(
            """SELECT run_id, state, send_at, created FROM runs
               WHERE state='running' OR (state='scheduled' AND send_at <= ?) ORDER BY created""",
            (now_iso,),
        )
    )


def advance_plan(conn: sqlite3.Connection, run_id: str, cursor: tuple[int, int] | None, planned: bool) -> None:
    """The run's read cursor (offset, line) after a planned batch, and whether planning is done;
    in the batch's transaction, so a resumed plan starts right after the last committed row."""
    if cursor is not None:
        conn.execute(
            "UPDATE runs SET plan_offset=?, plan_line=?, planned=? WHERE run_id=?",
            (cursor[0], cursor[1], int(planned), run_id),
        )
    elif planned:
        conn.execute("UPDATE runs SET planned=1 WHERE run_id=?", (run_id,))


def counts(conn: sqlite3.Connection, run_id: str) -> dict[str, dict[str, int]]:
    """{channel: {state: n}} for one run."""
    result: dict[str, dict[str, int]] = {}
    for channel, state, n in conn.execute(
        "SELECT channel, state, count(*) FROM deliveries WHERE run_id=? GROUP BY channel, state", (run_id,)
    ):
        result.setdefault(channel, {})[state] = n
    return result


def reasons(conn: sqlite3.Connection, run_id: str) -> dict[str, int]:
    return {
        f"{state}:{reason}": n
        for state, reason, n in conn.execute(
            """SELECT state, COALESCE(reason, error_class, ''), count(*) FROM deliveries
           WHERE run_id=? AND state IN ('skipped', 'deferred', 'dead', 'in_doubt') GROUP BY 1, 2""",
            (run_id,),
        )
    }


def sent_count(conn: sqlite3.Connection, run_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM deliveries WHERE run_id=? AND state='sent'", (run_id,)).fetchone()[0])


def unsettled_count(conn: sqlite3.Connection, run_id: str) -> int:
    """Deliveries of a run not yet settled: pending or in flight (an index range, not the whole run)."""
    return int(
        conn.execute(
            "SELECT count(*) FROM deliveries WHERE run_id=? AND state IN ('pending', 'inflight')", (run_id,)
        ).fetchone()[0]
    )


def stopped_providers(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """Why the churn guard stopped a provider during the run (pipeline/churn.py), one message per
    provider: its deliveries are dead with error class ProviderMisconfigured."""
    return [
        message
        for _, message in conn.execute(
            """SELECT provider, min(error_message) FROM deliveries
               WHERE run_id=? AND state='dead' AND error_class='ProviderMisconfigured' GROUP BY provider""",
            (run_id,),
        )
    ]
