"""Runs, deliveries (the outbox), attempts and dead letters: the SQL behind the state machine."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifyctl.store.db import UPDATE_FROM, dumps, in_chunks, iso, loads, multirow_chunks, transaction

DELIVERY_COLUMNS = (
    "id, run_id, line, user_id, channel, address, idempotency_key, event_id, template, template_version, "
    "category, locale, state, reason, defer_until, next_attempt_at, attempts, provider, provider_message_id, "
    "message_id, error_class, error_message, in_doubt, redrive_of, data, created, updated"
)


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
    state: str
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
            state=row["state"],
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
    state: str,
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


def list_runs(conn: sqlite3.Connection, limit: int = 50) -> list[Run]:
    return [Run.from_row(r) for r in conn.execute("SELECT * FROM runs ORDER BY created DESC LIMIT ?", (limit,))]


def set_run_state(
    conn: sqlite3.Connection, run_id: str, state: str, *, started: bool = False, finished: bool = False
) -> None:
    sets = ["state=?"]
    params: list[Any] = [state]
    if started:
        sets.append("started=COALESCE(started, ?)")
        params.append(iso())
    if finished:
        sets.append("finished=?")
        params.append(iso())
    params.append(run_id)
    conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id=?", params)


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


def pending_page(
    conn: sqlite3.Connection,
    run_id: str,
    channel: str,
    after_id: int,
    limit: int,
    shard: tuple[int, int] | None = None,
) -> list[sqlite3.Row]:
    """The next pending deliveries of a channel in id order (index: run_id, state, channel, id); with
    `shard=(k, n)` only those whose id is k modulo n (one sender process per shard)."""
    where = "run_id=? AND state='pending' AND channel=? AND id>?"
    params: list[Any] = [run_id, channel, after_id]
    if shard is not None and shard[1] > 1:
        where += " AND id % ? = ?"
        params += [shard[1], shard[0]]
    return list(
        conn.execute(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {where} ORDER BY id LIMIT ?", [*params, limit])
    )


def others_pending_page(
    conn: sqlite3.Connection, run_id: str, channel: str, before_id: int, limit: int, shard: tuple[int, int]
) -> list[sqlite3.Row]:
    """The other shards' pending deliveries of a channel never attempted yet, from the highest id
    below `before_id` down: what a sender process whose own shard is done takes on, from the end
    its owner reaches last (its retries stay with the process that made the attempt)."""
    return list(
        conn.execute(
            f"""SELECT {DELIVERY_COLUMNS} FROM deliveries
            WHERE run_id=? AND state='pending' AND channel=? AND id<? AND id % ? != ? AND next_attempt_at IS NULL
            ORDER BY id DESC LIMIT ?""",
            (run_id, channel, before_id, shard[1], shard[0], limit),
        )
    )


def sent_count(conn: sqlite3.Connection, run_id: str) -> int:
    return int(conn.execute("SELECT count(*) FROM deliveries WHERE run_id=? AND state='sent'", (run_id,)).fetchone()[0])


def get_delivery(conn: sqlite3.Connection, delivery_id: int) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id=?", (delivery_id,)
    ).fetchone()
    return row


# --- state transitions (run inside the ledger's batch transaction) ------------------------------


def mark_inflight(conn: sqlite3.Connection, delivery_id: int, attempt: int, provider: str) -> None:
    mark_inflight_many(conn, [(delivery_id, attempt, provider)], iso())


def mark_inflight_many(
    conn: sqlite3.Connection, intents: list[tuple[int, int, str]], now: str, *, claim: bool = False
) -> set[int]:
    """`mark_inflight` for many (delivery_id, attempt, provider) at once, in delivery order; returns
    the delivery ids marked.

    `claim=True` (the ledger's intents): only the rows still pending after exactly attempt - 1
    attempts are marked, as one sender's claim on them. A run's sender processes may read the same
    pending row (one helps another with its shard once its own is done, see Engine._feed); the
    first intent to commit takes it, the other finds it changed and does not send it. Run inside the
    batch's write transaction, so the read and the change are one step.

    One multi-row statement per change and chunk rather than `executemany`: each executed statement
    is a hand-off of the GIL, and this runs in the ledger's thread beside a busy event loop."""
    intents = sorted(intents)
    if claim:
        intents = _claimable(conn, intents)
    if UPDATE_FROM:
        for chunk, values in multirow_chunks(conn, intents, 3):
            conn.execute(
                "UPDATE deliveries SET state='inflight', attempts=v.column2, provider=v.column3, updated=? "
                f"FROM (VALUES {values}) AS v WHERE deliveries.id=v.column1",
                [now, *[value for intent in chunk for value in intent]],
            )
    else:
        conn.executemany(
            "UPDATE deliveries SET state='inflight', attempts=?, provider=?, updated=? WHERE id=?",
            [(attempt, provider, now, delivery_id) for delivery_id, attempt, provider in intents],
        )
    for chunk, values in multirow_chunks(conn, intents, 5):
        conn.execute(
            f"INSERT INTO attempts (delivery_id, number, started, outcome, provider) VALUES {values}",
            [value for d, attempt, provider in chunk for value in (d, attempt, now, "inflight", provider)],
        )
    return {delivery_id for delivery_id, _, _ in intents}


def _claimable(conn: sqlite3.Connection, intents: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The intents whose row is pending after attempt - 1 attempts; of several intents for one row,
    the first only (`found.pop`)."""
    found: dict[int, int] = {}
    for chunk, marks in in_chunks([delivery_id for delivery_id, _, _ in intents]):
        found.update(
            conn.execute(
                f"SELECT id, attempts FROM deliveries WHERE id IN ({marks}) AND state='pending'", chunk
            ).fetchall()
        )
    return [intent for intent in intents if found.pop(intent[0], None) == intent[1] - 1]


def mark_sent_many(conn: sqlite3.Connection, sent: list[tuple[int, int, str, str | None, float]], now: str) -> None:
    """`mark_sent` for many (delivery_id, attempt, provider, provider_message_id, latency_ms) at once
    (multi-row statements, as `mark_inflight_many`)."""
    sent = sorted(sent)
    if not UPDATE_FROM:
        conn.executemany(
            """UPDATE deliveries SET state='sent', provider=?, provider_message_id=?, error_class=NULL,
                 error_message=NULL, next_attempt_at=NULL, updated=? WHERE id=?""",
            [(provider, message_id, now, delivery_id) for delivery_id, _, provider, message_id, _ in sent],
        )
        conn.executemany(
            "UPDATE attempts SET outcome='sent', latency_ms=?, code=NULL, message=NULL "
            "WHERE delivery_id=? AND number=?",
            [(latency_ms, delivery_id, attempt) for delivery_id, attempt, _, _, latency_ms in sent],
        )
        return
    for chunk, values in multirow_chunks(conn, sent, 3):
        conn.execute(
            "UPDATE deliveries SET state='sent', provider=v.column2, provider_message_id=v.column3, "
            "error_class=NULL, error_message=NULL, next_attempt_at=NULL, updated=? "
            f"FROM (VALUES {values}) AS v WHERE deliveries.id=v.column1",
            [now, *[value for d, _, provider, message_id, _ in chunk for value in (d, provider, message_id)]],
        )
        conn.execute(
            "UPDATE attempts SET outcome='sent', latency_ms=v.column3, code=NULL, message=NULL "
            f"FROM (VALUES {values}) AS v WHERE attempts.delivery_id=v.column1 AND attempts.number=v.column2",
            [value for d, attempt, _, _, latency_ms in chunk for value in (d, attempt, latency_ms)],
        )


def _finish_attempt(
    conn: sqlite3.Connection,
    delivery_id: int,
    attempt: int,
    outcome: str,
    latency_ms: float,
    code: str | None,
    message: str | None,
) -> None:
    conn.execute(
        "UPDATE attempts SET outcome=?, latency_ms=?, code=?, message=? WHERE delivery_id=? AND number=?",
        (outcome, latency_ms, code, message, delivery_id, attempt),
    )


def mark_sent(
    conn: sqlite3.Connection,
    delivery_id: int,
    attempt: int,
    provider: str,
    provider_message_id: str | None,
    latency_ms: float,
) -> None:
    mark_sent_many(conn, [(delivery_id, attempt, provider, provider_message_id, latency_ms)], iso())


def mark_retry(
    conn: sqlite3.Connection,
    delivery_id: int,
    attempt: int,
    outcome: str,
    latency_ms: float,
    code: str | None,
    error_class: str,
    message: str,
    next_attempt_at: float,
) -> None:
    conn.execute(
        """UPDATE deliveries SET state='pending', next_attempt_at=?, error_class=?, error_message=?, updated=?
           WHERE id=?""",
        (next_attempt_at, error_class, message, iso(), delivery_id),
    )
    _finish_attempt(conn, delivery_id, attempt, outcome, latency_ms, code, message)


def mark_dead(
    conn: sqlite3.Connection,
    delivery_id: int,
    *,
    attempt: int | None,
    outcome: str,
    latency_ms: float | None,
    code: str | None,
    error_class: str,
    message: str,
    envelope: dict[str, Any] | None,
) -> None:
    now = iso()
    row = conn.execute(
        "UPDATE deliveries SET state='dead', error_class=?, error_message=?, updated=? WHERE id=? "
        "RETURNING run_id, channel",
        (error_class, message, now, delivery_id),
    ).fetchone()
    if attempt is not None:
        _finish_attempt(conn, delivery_id, attempt, outcome, latency_ms or 0.0, code, message)
    conn.execute(
        """INSERT INTO dead_letters (delivery_id, run_id, channel, envelope, error_class, error_message, created)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(delivery_id) DO UPDATE SET envelope=excluded.envelope, error_class=excluded.error_class,
             error_message=excluded.error_message, created=excluded.created, redriven_at=NULL""",
        (delivery_id, row["run_id"], row["channel"], dumps(envelope) if envelope else None, error_class, message, now),
    )


def withdraw_intent(
    conn: sqlite3.Connection, delivery_id: int, attempt: int, state: str, reason: str | None, defer_until: str | None
) -> None:
    """Undo an intent that policy withdrew before the provider call: the attempt never happened."""
    conn.execute("DELETE FROM attempts WHERE delivery_id=? AND number=?", (delivery_id, attempt))
    conn.execute("UPDATE deliveries SET attempts=? WHERE id=?", (attempt - 1, delivery_id))
    mark_decided(conn, delivery_id, state, reason, defer_until)


def mark_decided(
    conn: sqlite3.Connection, delivery_id: int, state: str, reason: str | None, defer_until: str | None = None
) -> None:
    """A dispatch-time policy decision: skipped or deferred (no provider call)."""
    conn.execute(
        "UPDATE deliveries SET state=?, reason=?, defer_until=?, updated=? WHERE id=?",
        (state, reason, defer_until, iso(), delivery_id),
    )


# --- crash recovery -----------------------------------------------------------------------------


def mark_in_doubt(
    conn: sqlite3.Connection, delivery_id: int, attempt: int, *, resend: bool, reason: str | None
) -> None:
    """An attempt whose outcome is unknown (a timeout after the request was written, or a crash
    while it was in flight): the attempt is `in_doubt`, and the delivery is marked `in_doubt = 1`
    for good. Re-sent (pending again, due now, with the same message id) where the receiver dedupes,
    else held for the operator (`dlq redrive --in-doubt`)."""
    now = iso()
    conn.execute("UPDATE attempts SET outcome='in_doubt' WHERE delivery_id=? AND number=?", (delivery_id, attempt))
    if resend:
        conn.execute(
            "UPDATE deliveries SET state='pending', in_doubt=1, next_attempt_at=NULL, updated=? WHERE id=?",
            (now, delivery_id),
        )
    else:
        conn.execute(
            "UPDATE deliveries SET state='in_doubt', in_doubt=1, reason=?, updated=? WHERE id=?",
            (reason or "outcome_unknown", now, delivery_id),
        )


def skip_unsent_of_user(conn: sqlite3.Connection, user_id: str, reason: str) -> list[int]:
    """A user's deliveries not yet sent: pending and deferred ones are skipped for `reason`; returns
    the ids of those in flight (their outcome is on its way)."""
    now = iso()
    conn.execute(
        "UPDATE deliveries SET state='skipped', reason=?, defer_until=NULL, next_attempt_at=NULL, updated=? "
        "WHERE user_id=? AND state IN ('pending', 'deferred')",
        (reason, now, user_id),
    )
    return [
        row[0] for row in conn.execute("SELECT id FROM deliveries WHERE user_id=? AND state='inflight'", (user_id,))
    ]


def in_flight_attempt(conn: sqlite3.Connection, delivery_id: int, attempt: int) -> bool:
    """Whether `attempt` is the delivery's attempt in flight (an outcome reported for it is current)."""
    row = conn.execute("SELECT state, attempts FROM deliveries WHERE id=?", (delivery_id,)).fetchone()
    return row is not None and row["state"] == "inflight" and row["attempts"] == attempt


def unpublish(conn: sqlite3.Connection, delivery_id: int, attempt: int) -> None:
    """An intent whose delivery provably never left (never published to the workers): undone, the
    delivery pending again as before it."""
    conn.execute("DELETE FROM attempts WHERE delivery_id=? AND number=?", (delivery_id, attempt))
    conn.execute(
        "UPDATE deliveries SET state='pending', attempts=?, updated=? WHERE id=? AND state='inflight'",
        (attempt - 1, iso(), delivery_id),
    )


def inflight(conn: sqlite3.Connection, run_id: str) -> list[sqlite3.Row]:
    """The run's deliveries in flight: (id, channel, attempts, provider)."""
    return conn.execute(
        "SELECT id, channel, attempts, provider FROM deliveries WHERE run_id=? AND state='inflight' ORDER BY id",
        (run_id,),
    ).fetchall()


def release_due_deferred(conn: sqlite3.Connection, run_id: str, now: datetime) -> list[int]:
    """Deferred deliveries now due go back to pending; returns their ids."""
    with transaction(conn):
        return [
            r[0]
            for r in conn.execute(
                """UPDATE deliveries SET state='pending', defer_until=NULL, reason=NULL, updated=?
                   WHERE run_id=? AND state='deferred' AND defer_until<=? RETURNING id""",
                (iso(), run_id, iso(now)),
            )
        ]


def deliveries_by_id(conn: sqlite3.Connection, ids: list[int]) -> list[sqlite3.Row]:
    rows: list[sqlite3.Row] = []
    for chunk, marks in in_chunks(ids):
        rows.extend(conn.execute(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id IN ({marks}) ORDER BY id", chunk))
    return rows


# --- locks --------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(conn: sqlite3.Connection, name: str, owner: str) -> bool:
    """A lock that dies with its process: a holder whose pid is gone is taken over."""
    with transaction(conn):
        row = conn.execute("SELECT pid FROM locks WHERE name=?", (name,)).fetchone()
        if row is not None and row["pid"] != os.getpid() and _pid_alive(row["pid"]):
            return False
        conn.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?)", (name, owner, os.getpid(), iso()))
    return True


def release_lock(conn: sqlite3.Connection, name: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM locks WHERE name=? AND pid=?", (name, os.getpid()))


def lock_holder_alive(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT pid FROM locks WHERE name=?", (name,)).fetchone()
    return row is not None and _pid_alive(row["pid"])
