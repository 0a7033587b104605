"""A run's sender processes share the work: one whose shard is done takes on the others' rows.

Rows are split between sender processes by id modulo N; the planning parent falls behind its
siblings. A process whose own shard is all queued reads the other shards' never-attempted rows from
the end down, and each intent claims its row: it commits only while the row is still pending after
exactly attempt - 1 attempts, so a row two processes both read is sent by one of them only.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from notifyctl.app.context import Context
from notifyctl.backends.local import LocalBackend
from notifyctl.models import Envelope, SendResult, User
from notifyctl.pipeline.engine import Engine
from notifyctl.pipeline.idempotency import IdempotencyStore
from notifyctl.pipeline.planner import PlanItem, Planner
from notifyctl.policy.decide import Policy
from notifyctl.providers.base import Capabilities
from notifyctl.settings import load_settings
from notifyctl.store import directory, outbox, runs
from notifyctl.store.db import connect, iso
from notifyctl.store.ledger import Ledger
from tests.workspace import make_workspace

N = 40


class Inbox:
    """An in-app provider per sender process; with `gate`, every send waits for the test to open it."""

    name = "inapp"
    capabilities = Capabilities(channels=("inapp",), idempotent=True)

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.entered = asyncio.Event()
        self.received: list[int] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, envelope: Envelope) -> SendResult:
        self.received.append(envelope.delivery_id)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return SendResult(provider=self.name, provider_message_id=envelope.message_id)


def _planned_run(ctx: Context, n: int) -> str:
    """A broadcast run of `n` in-app deliveries (ids 1..n), planned to the end."""
    template = ctx.templates.get("welcome")
    directory.upsert_users(ctx.conn, [User(user_id=f"u{i}", email=f"u{i}@example.com") for i in range(1, n + 1)])
    runs.create_run(
        ctx.conn,
        run_id="r1",
        kind="broadcast",
        template="welcome",
        template_version=template.version,
        category="marketing",
        channels=["inapp"],
        state="running",
        data={"product_name": "Acme"},
    )
    items = [
        PlanItem(
            line=i,
            end_offset=0,
            template="welcome",
            template_version=template.version,
            category="marketing",
            event_id="c1",
            channels=["inapp"],
            user_id=f"u{i}",
            data={"first_name": f"User {i}"},
        )
        for i in range(1, n + 1)
    ]
    planner = Planner(ctx.conn, Policy(ctx.settings, ctx.conn), IdempotencyStore(3600), ctx.clock)
    planner.plan_batch("r1", items, planned=True)
    return "r1"


async def test_a_process_whose_shard_is_done_sends_the_rest_of_the_others(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, providers={"inapp": {"type": "inapp", "rate": 100000, "concurrency": 1}})
    settings = load_settings(ws.config)
    parent_ctx, sibling_ctx = Context.open(settings), Context.open(settings)
    run_id = _planned_run(parent_ctx, N)
    # The parent (shard 0: even ids) is stuck on its first send; its sibling (shard 1: odd ids)
    # sends its own rows and then the parent's, except the one the parent has in flight.
    gate = asyncio.Event()
    parent_inbox, sibling_inbox = Inbox(gate), Inbox()
    parent = Engine(
        settings, parent_ctx.conn, parent_ctx.templates, providers={"inapp": parent_inbox}, backend=LocalBackend((0, 2))
    )
    sibling = Engine(
        settings,
        sibling_ctx.conn,
        sibling_ctx.templates,
        providers={"inapp": sibling_inbox},
        backend=LocalBackend((1, 2), follows=True),
    )
    parent_task = asyncio.create_task(parent.run(run_id))
    await asyncio.wait_for(parent_inbox.entered.wait(), 10)
    await asyncio.wait_for(sibling.run(run_id), 30)  # it ends with every row but one claimed
    gate.set()
    outcome = await asyncio.wait_for(parent_task, 30)

    assert parent_inbox.received == [2]  # its first row; the rest of its queue was taken meanwhile
    assert sorted(sibling_inbox.received) == [i for i in range(1, N + 1) if i != 2]
    assert outcome.state == "completed"
    assert outcome.counts == {"inapp": {"sent": N}}
    attempts = parent_ctx.conn.execute("SELECT delivery_id, number, outcome FROM attempts ORDER BY delivery_id")
    assert [tuple(a) for a in attempts] == [(i, 1, "sent") for i in range(1, N + 1)]  # one attempt each
    parent_ctx.conn.close()
    sibling_ctx.conn.close()


async def test_both_processes_reading_the_same_rows_send_each_once(tmp_path: Path) -> None:
    """Shards of 1 and 1 (no split): both read every row; the intents decide who sends what."""
    ws = make_workspace(tmp_path, providers={"inapp": {"type": "inapp", "rate": 100000, "concurrency": 4}})
    settings = load_settings(ws.config)
    a_ctx, b_ctx = Context.open(settings), Context.open(settings)
    run_id = _planned_run(a_ctx, N)
    a_inbox, b_inbox = Inbox(), Inbox()
    a = Engine(settings, a_ctx.conn, a_ctx.templates, providers={"inapp": a_inbox}, backend=LocalBackend())
    b = Engine(settings, b_ctx.conn, b_ctx.templates, providers={"inapp": b_inbox}, backend=LocalBackend(follows=True))
    await asyncio.gather(a.run(run_id), b.run(run_id))
    assert sorted(a_inbox.received + b_inbox.received) == list(range(1, N + 1))  # each exactly once
    assert runs.counts(a_ctx.conn, run_id) == {"inapp": {"sent": N}}
    assert a_ctx.conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == N
    a_ctx.conn.close()
    b_ctx.conn.close()


def _row(conn: sqlite3.Connection, delivery_id: int) -> tuple[str, int]:
    state, attempts = conn.execute("SELECT state, attempts FROM deliveries WHERE id=?", (delivery_id,)).fetchone()
    return state, attempts


@pytest.mark.parametrize("update_from", [True, False], ids=["update-from", "old-sqlite"])
def test_an_intent_claims_only_a_row_still_pending_after_the_attempts_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_from: bool
) -> None:
    """With UPDATE … FROM (SQLite 3.33+), and one UPDATE per row on older SQLite."""
    monkeypatch.setattr(outbox, "UPDATE_FROM", update_from and outbox.UPDATE_FROM)
    ws = make_workspace(tmp_path)
    settings = load_settings(ws.config)
    ctx = Context.open(settings)
    run_id = _planned_run(ctx, 4)
    conn = ctx.conn
    with conn:
        conn.execute("UPDATE deliveries SET state='sent', attempts=1 WHERE id=2")  # sent by another process
        conn.execute("UPDATE deliveries SET attempts=1 WHERE id=3")  # pending again after a failed attempt 1
    with conn:
        intents = [(1, 1, "inapp"), (2, 1, "inapp"), (3, 1, "inapp"), (4, 1, "inapp"), (4, 1, "inapp")]
        claimed = outbox.mark_inflight_many(conn, intents, iso(), claim=True)
    assert claimed == {1, 4}
    assert [_row(conn, i) for i in (1, 2, 3, 4)] == [("inflight", 1), ("sent", 1), ("pending", 1), ("inflight", 1)]
    assert [tuple(r) for r in conn.execute("SELECT delivery_id, number FROM attempts ORDER BY 1")] == [(1, 1), (4, 1)]
    with conn:  # attempt 2 of row 3 is its to claim; attempt 2 of row 1 (in flight) is not
        assert outbox.mark_inflight_many(conn, [(3, 2, "inapp"), (1, 2, "inapp")], iso(), claim=True) == {3}
    assert runs.counts(conn, run_id) == {"inapp": {"inflight": 3, "sent": 1}}
    conn.close()


async def test_the_ledger_answers_none_for_an_intent_it_could_not_claim(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    settings = load_settings(ws.config)
    ctx = Context.open(settings)
    _planned_run(ctx, 2)
    ledger = Ledger(settings.database_path)
    await ledger.start()
    try:
        first, second = await asyncio.gather(ledger.intent(1, 1, "inapp"), ledger.intent(1, 1, "inapp"))
        assert isinstance(first, int) and second is None  # one batch, one row: the first intent claims it
        assert await ledger.intent(2, 1, "inapp") == directory.directory_version(connect(settings.database_path))
        assert await ledger.intent(2, 1, "inapp") is None  # already in flight
    finally:
        await ledger.stop()
    ctx.conn.close()
