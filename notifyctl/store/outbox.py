"""The outbox: the deliveries' state machine. Pages of pending deliveries, intents (claims),
sent / retry / dead, withdrawn intents and policy decisions at dispatch, in-doubt attempts and
the recovery helpers (unpublish, what is in flight), deferred rows released, rows by id."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from notifyctl.states import AttemptOutcome, DeliveryState
from notifyctl.store.db import UPDATE_FROM, dumps, in_chunks, iso, multirow_chunks, transaction

DELIVERY_COLUMNS = (
    "id, run_id, line, user_id, channel, address, idempotency_key, event_id, template, template_version, "
    "category, locale, state, reason, defer_until, next_attempt_at, attempts, provider, provider_message_id, "
    "message_id, error_class, error_message, in_doubt, redrive_of, data, created, updated"
)


# The columns a planned delivery is inserted with (created and updated follow, both the plan's time).
PLANNED_COLUMNS = (
    "id",
    "run_id",
    "line",
    "user_id",
    "channel",
    "address",
    "idempotency_key",
    "event_id",
    "template",
    "template_version",
    "category",
    "locale",
    "state",
    "reason",
    "defer_until",
    "message_id",
    "data",
)
INSERT_ROWS = 500  # rows per INSERT (fewer where SQLite allows fewer bound values)


def next_delivery_id(conn: sqlite3.Connection) -> int:
    """The id the next delivery gets: the planner numbers a batch's rows itself (inside its write
    transaction), so that it knows them before they are inserted."""
    return int(conn.execute("SELECT COALESCE(max(id), 0) FROM deliveries").fetchone()[0]) + 1


def insert_planned(conn: sqlite3.Connection, drafts: list[dict[str, Any]], now_iso: str) -> None:
    """Insert planned deliveries, each a dict of PLANNED_COLUMNS (id included), created and updated
    at `now_iso`. Multi-row statements with positional values: a fraction of the cost of
    executemany over dicts."""
    for chunk, values in multirow_chunks(conn, drafts, len(PLANNED_COLUMNS) + 2, INSERT_ROWS):
        conn.execute(
            f"INSERT INTO deliveries ({', '.join(PLANNED_COLUMNS)}, created, updated) VALUES {values}",
            [value for d in chunk for value in (*(d[column] for column in PLANNED_COLUMNS), now_iso, now_iso)],
        )


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


def get_delivery(conn: sqlite3.Connection, delivery_id: int) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id=?", (delivery_id,)
    ).fetchone()
    return row


# --- state transitions (run inside the ledger's batch transaction) ------------------------------


def mark_inflight_many(
    conn: sqlite3.Connection, intents: list[tuple[int, int, str]], now: str, *, claim: bool = False
) -> set[int]:
    """Intents: each (delivery_id, attempt, provider) in flight, its attempt begun, in delivery
    order; returns the delivery ids marked.

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
    outcome = AttemptOutcome.inflight  # looked up once, not per row
    for chunk, values in multirow_chunks(conn, intents, 5):
        conn.execute(
            f"INSERT INTO attempts (delivery_id, number, started, outcome, provider) VALUES {values}",
            [value for d, attempt, provider in chunk for value in (d, attempt, now, outcome, provider)],
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
    outcome: AttemptOutcome,
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
    outcome: AttemptOutcome,
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
    outcome: AttemptOutcome,
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


def mark_skipped_after_attempt(
    conn: sqlite3.Connection,
    delivery_id: int,
    attempt: int,
    latency_ms: float,
    code: str | None,
    message: str,
    reason: str,
) -> None:
    """A delivery settled as skipped by its attempt's answer (the push token is gone for good): the
    attempt is kept as permanent with the provider's code; no dead letter."""
    conn.execute(
        "UPDATE deliveries SET state='skipped', reason=?, error_class=NULL, error_message=?, next_attempt_at=NULL,"
        " updated=? WHERE id=?",
        (reason, message, iso(), delivery_id),
    )
    _finish_attempt(conn, delivery_id, attempt, AttemptOutcome.permanent, latency_ms, code, message)


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
    conn: sqlite3.Connection,
    delivery_id: int,
    attempt: int,
    resend: bool,
    reason: str | None,
    code: str | None = None,
    message: str | None = None,
    *,
    next_attempt_at: float | None = None,
) -> None:
    """An attempt whose outcome is unknown (a timeout after the request was written, or a crash
    while it was in flight): the attempt is `in_doubt`, with what made it so (`code`, `message`),
    and the delivery is marked `in_doubt = 1` for good. Re-sent (pending again, due now, with the
    same message id, due at `next_attempt_at` or now) where the receiver dedupes, else held for the
    operator (`dlq redrive --in-doubt`)."""
    now = iso()
    conn.execute(
        "UPDATE attempts SET outcome='in_doubt', code=coalesce(?, code), message=coalesce(?, message) "
        "WHERE delivery_id=? AND number=?",
        (code, message, delivery_id, attempt),
    )
    if resend:
        conn.execute(
            "UPDATE deliveries SET state='pending', in_doubt=1, next_attempt_at=?, updated=? WHERE id=?",
            (next_attempt_at, now, delivery_id),
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
    return row is not None and row["state"] == DeliveryState.inflight and row["attempts"] == attempt


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
