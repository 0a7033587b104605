"""The ledger's group commit: typed intents and successes applied in bulk, ops in order, and a bad
change that does not take its neighbours with it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from notifyctl.app.context import Context
from notifyctl.models import User
from notifyctl.pipeline.idempotency import IdempotencyStore
from notifyctl.pipeline.planner import PlanItem, Planner
from notifyctl.policy.decide import Policy
from notifyctl.settings import load_settings
from notifyctl.store import directory, outbox, runs
from notifyctl.store.db import MULTIROW
from notifyctl.store.ledger import Ledger
from tests.workspace import make_workspace


def planned(tmp_path: Path, n: int) -> tuple[Context, list[int]]:
    """A run with n pending in-app deliveries; returns their ids."""
    ws = make_workspace(tmp_path)
    ctx = Context.open(load_settings(ws.config))
    directory.upsert_users(ctx.conn, [User(user_id=f"u{i}") for i in range(n)])
    runs.create_run(
        ctx.conn,
        run_id="r",
        kind="api",
        template="(api)",
        template_version="-",
        category="-",
        channels=["inapp"],
        state="running",
    )
    planner = Planner(ctx.conn, Policy(ctx.settings, ctx.conn), IdempotencyStore(3600), ctx.clock)
    items = [
        PlanItem(
            line=i,
            end_offset=0,
            template="welcome",
            template_version="v",
            category="transactional",
            event_id=f"e{i}",
            channels=["inapp"],
            user_id=f"u{i}",
        )
        for i in range(n)
    ]
    result = planner.plan_batch("r", items)
    return ctx, [d["id"] for d in result.deliveries]


def rows(conn: sqlite3.Connection) -> dict[int, tuple[str, int, str | None]]:
    return {r["id"]: (r["state"], r["attempts"], r["provider"]) for r in conn.execute("SELECT * FROM deliveries")}


def attempts(conn: sqlite3.Connection) -> list[tuple[int, int, str]]:
    return [
        tuple(r) for r in conn.execute("SELECT delivery_id, number, outcome FROM attempts ORDER BY delivery_id, number")
    ]  # type: ignore[misc]


async def test_intents_and_successes_are_committed_in_bulk(tmp_path: Path) -> None:
    ctx, ids = planned(tmp_path, 3)
    ledger = Ledger(ctx.settings.database_path)
    await ledger.start()
    versions = await asyncio.gather(*(ledger.intent(i, 1, "inapp") for i in ids))
    assert set(versions) == {directory.directory_version(ctx.conn)}
    assert rows(ctx.conn) == {i: ("inflight", 1, "inapp") for i in ids}
    ledger.sent(ids[0], 1, "inapp", "m0", 1.5)
    ledger.sent(ids[1], 1, "inapp", None, 2.5)
    await ledger.stop()
    assert rows(ctx.conn) == {
        ids[0]: ("sent", 1, "inapp"),
        ids[1]: ("sent", 1, "inapp"),
        ids[2]: ("inflight", 1, "inapp"),
    }
    assert attempts(ctx.conn) == [(ids[0], 1, "sent"), (ids[1], 1, "sent"), (ids[2], 1, "inflight")]
    message_id = ctx.conn.execute("SELECT provider_message_id FROM deliveries WHERE id=?", (ids[0],)).fetchone()[0]
    assert message_id == "m0"
    ctx.conn.close()


async def test_an_outcome_and_the_next_attempts_intent_in_one_batch_apply_in_that_order(tmp_path: Path) -> None:
    ctx, ids = planned(tmp_path, 1)
    ledger = Ledger(ctx.settings.database_path)
    await ledger.start()
    (d,) = ids
    await ledger.intent(d, 1, "inapp")
    # Queued in the same tick, so they share a batch: the retry of attempt 1, then attempt 2's intent.
    ledger.post(lambda c: outbox.mark_retry(c, d, 1, "transient", 3.0, "500", "TransientError", "boom", 0.0))
    await ledger.intent(d, 2, "inapp")
    await ledger.stop()
    assert rows(ctx.conn) == {d: ("inflight", 2, "inapp")}
    assert attempts(ctx.conn) == [(d, 1, "transient"), (d, 2, "inflight")]
    ctx.conn.close()


async def test_a_failing_change_does_not_take_its_batch_with_it(tmp_path: Path) -> None:
    ctx, ids = planned(tmp_path, 2)
    ledger = Ledger(ctx.settings.database_path)
    await ledger.start()
    await ledger.intent(ids[0], 1, "inapp")
    ledger.sent(ids[0], 1, "inapp", "m", 1.0)
    ledger.post(lambda c: c.execute("INSERT INTO no_such_table VALUES (1)"))
    version = await ledger.intent(ids[1], 1, "inapp")
    await ledger.stop()
    assert version == directory.directory_version(ctx.conn)
    assert rows(ctx.conn) == {ids[0]: ("sent", 1, "inapp"), ids[1]: ("inflight", 1, "inapp")}
    assert [type(e).__name__ for e in ledger.failures] == ["OperationalError"]
    ctx.conn.close()


async def test_batches_larger_than_one_statement_write_every_row(tmp_path: Path) -> None:
    n = MULTIROW * 2 + 7  # three multi-row statements per change
    ctx, ids = planned(tmp_path, n)
    ledger = Ledger(ctx.settings.database_path)
    await ledger.start()
    await asyncio.gather(*(ledger.intent(i, 1, "inapp") for i in ids))
    for i in ids[1:]:
        ledger.sent(i, 1, "inapp", f"m{i}", i / 10)
    await ledger.stop()
    written = {
        r["id"]: (r["state"], r["attempts"], r["provider"], r["provider_message_id"])
        for r in ctx.conn.execute("SELECT * FROM deliveries")
    }
    assert written == {i: ("inflight", 1, "inapp", None) if i == ids[0] else ("sent", 1, "inapp", f"m{i}") for i in ids}
    latencies = dict(ctx.conn.execute("SELECT delivery_id, latency_ms FROM attempts WHERE outcome='sent'").fetchall())
    assert latencies == {i: i / 10 for i in ids[1:]}
    assert attempts(ctx.conn)[0] == (ids[0], 1, "inflight") and len(attempts(ctx.conn)) == n
    ctx.conn.close()


@pytest.mark.parametrize("update_from", [True, False], ids=["update-from", "sqlite-before-3.33"])
def test_bulk_changes_respect_a_small_bound_values_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_from: bool
) -> None:
    ctx, ids = planned(tmp_path, 50)
    monkeypatch.setattr(outbox, "UPDATE_FROM", update_from)
    ctx.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 20)  # as old SQLite builds (999) but smaller
    with ctx.conn:
        ctx.conn.execute("BEGIN IMMEDIATE")
        outbox.mark_inflight_many(ctx.conn, [(i, 1, "inapp") for i in ids], "2026-11-22T00:00:00+00:00")
        outbox.mark_sent_many(ctx.conn, [(i, 1, "inapp", f"m{i}", 2.0) for i in ids[:30]], "2026-11-22T00:00:01+00:00")
    assert rows(ctx.conn) == {i: ("sent" if i in ids[:30] else "inflight", 1, "inapp") for i in ids}
    assert attempts(ctx.conn) == [(i, 1, "sent" if i in ids[:30] else "inflight") for i in ids]
    ctx.conn.close()
