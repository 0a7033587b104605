"""Policy answers read per page (Policy.view) and the directory change counter that keeps them honest.

The engine decides a queued delivery on its page's answers and learns at the intent's commit
whether the directory moved since; an opt-out that lands while a delivery waits in the queue must
still stop it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from notifyctl.app.context import Context
from notifyctl.app.erase import forget_user
from notifyctl.backends.local import LocalBackend
from notifyctl.models import Envelope, SendResult, User
from notifyctl.pipeline.engine import Engine
from notifyctl.pipeline.planner import PlanItem
from notifyctl.policy.decide import Policy
from notifyctl.providers.base import Capabilities
from notifyctl.settings import load_settings
from notifyctl.store import directory, outbox, runs
from notifyctl.store.db import connect
from notifyctl.store.secrets import installation_secret
from tests.workspace import make_workspace

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def version(conn: sqlite3.Connection) -> int:
    return directory.directory_version(conn)


@pytest.mark.parametrize(
    ("table", "insert", "update", "delete"),
    [
        (
            "suppressions",
            "INSERT INTO suppressions VALUES ('email', 'a@example.com', 'manual', 'cli', 'now')",
            "UPDATE suppressions SET reason='bounce'",
            "DELETE FROM suppressions",
        ),
        (
            "suppression_hashes",
            "INSERT INTO suppression_hashes VALUES ('email', 'ab12', 'erased', 'now')",
            "UPDATE suppression_hashes SET reason='stop'",
            "DELETE FROM suppression_hashes",
        ),
        (
            "preferences",
            "INSERT INTO preferences VALUES ('u1', 'email', '*', 0, 'cli', 'now')",
            "UPDATE preferences SET enabled=1",
            "DELETE FROM preferences",
        ),
    ],
)
def test_every_change_to_a_policy_table_bumps_the_directory_version(
    tmp_path: Path, table: str, insert: str, update: str, delete: str
) -> None:
    conn = connect(tmp_path / "db.sqlite")
    seen = [version(conn)]
    for statement in (insert, update, delete):
        with conn:
            conn.execute(statement)
        seen.append(version(conn))
    assert seen == sorted(set(seen)), f"{table}: {seen}"  # strictly increasing
    with conn:
        conn.execute("INSERT INTO users (user_id, attributes, created, updated) VALUES ('x', '{}', 'now', 'now')")
    assert version(conn) == seen[-1]  # other tables leave it alone


def test_a_view_answers_exactly_what_the_point_lookups_answer(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    settings = load_settings(ws.config)
    conn = connect(settings.database_path)
    users = [User(user_id=f"u{i}", email=f"user{i}@example.com") for i in range(8)]
    directory.upsert_users(conn, users)
    directory.add_suppression(conn, "email", "user1@example.com", "bounce")
    directory.set_preference(conn, "u2", "email", "marketing", False)
    directory.set_preference(conn, "u3", "email", "*", False)
    directory.set_preference(conn, "u4", "email", "*", False)
    directory.set_preference(conn, "u4", "email", "marketing", True)  # the specific row wins
    directory.set_preference(conn, "u5", "email", "*", True)
    directory.add_suppression(conn, "email", "user6@example.com", "stop")
    # Its address stays suppressed, as a keyed hash.
    forget_user(conn, "u6", installation_secret(conn, settings).erasure_key)
    policy = Policy(settings, conn)
    addresses = [u.email or "" for u in users] + ["inline@example.com"]
    view = policy.view("email", addresses, [u.user_id for u in users])
    assert view.suppressed == {"user1@example.com": "bounce", "user6@example.com": "stop"}
    for category in ("marketing", "transactional", "security"):
        for i, address in enumerate(addresses):
            user_id = f"u{i}" if i < len(users) else None
            args: dict[str, Any] = dict(channel="email", category=category, address=address, user_id=user_id, now=NOW)
            assert policy.decide(**args, view=view) == policy.decide(**args), (category, address)


def test_a_stale_view_is_not_trusted(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    settings = load_settings(ws.config)
    conn = connect(settings.database_path)
    directory.upsert_users(conn, [User(user_id="u1", email="a@example.com")])
    policy = Policy(settings, conn)
    view = policy.view("email", ["a@example.com"], ["u1"])
    args: dict[str, Any] = dict(channel="email", category="marketing", address="a@example.com", user_id="u1", now=NOW)
    assert policy.decide(**args, view=view).action == "send"
    directory.set_preference(conn, "u1", "email", "*", False)
    assert policy.decide(**args, view=view).reason == "preference_off"  # the counter moved: looked up again
    assert policy.decide(**args, view=view, verify=False).action == "send"  # what the caller then checks itself


def _service_run(conn: sqlite3.Connection) -> None:
    """An open service-mode run ("svc") on the in-app channel, as `serve` keeps one."""
    runs.create_run(
        conn,
        run_id="svc",
        kind="api",
        template="(api)",
        template_version="-",
        category="-",
        channels=["inapp"],
        state="running",
    )


def _welcome_items(version: str, numbers: Iterable[int]) -> list[PlanItem]:
    return [
        PlanItem(
            line=i,
            end_offset=0,
            template="welcome",
            template_version=version,
            category="marketing",
            event_id=f"e{i}",
            channels=["inapp"],
            user_id=f"u{i}",
            data={"product_name": "Acme", "first_name": f"User {i}"},
        )
        for i in numbers
    ]


class GatedInbox:
    """An in-app provider whose first send waits for the test to open the gate."""

    name = "inapp"
    capabilities = Capabilities(channels=("inapp",), idempotent=True)

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.received: list[str] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, envelope: Envelope) -> SendResult:
        self.received.append(envelope.address)
        self.entered.set()
        await self.gate.wait()
        return SendResult(provider=self.name, provider_message_id=envelope.message_id)


async def test_an_opt_out_that_lands_while_a_delivery_is_queued_stops_it(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, providers={"inapp": {"type": "inapp", "rate": 5000, "concurrency": 1}})
    settings = load_settings(ws.config)
    ctx = Context.open(settings)
    directory.upsert_users(ctx.conn, [User(user_id=f"u{i}", email=f"u{i}@example.com") for i in (1, 2, 3)])
    template = ctx.templates.get("welcome")
    _service_run(ctx.conn)
    inbox = GatedInbox()
    engine = Engine(settings, ctx.conn, ctx.templates, providers={"inapp": inbox}, backend=LocalBackend())
    task = asyncio.create_task(engine.run("svc", service=True))
    await engine.ready()
    engine.submit("svc", _welcome_items(template.version, (1, 2, 3)))
    await asyncio.wait_for(inbox.entered.wait(), 5)  # u1 is at the provider; u2 and u3 wait in the queue,
    # decided on their page's answers, read before this opt-out:
    directory.set_preference(ctx.conn, "u2", "inapp", "*", False)
    inbox.gate.set()
    for _ in range(250):
        counts = runs.counts(ctx.conn, "svc")
        if counts == {"inapp": {"sent": 2, "skipped": 1}}:
            break
        await asyncio.sleep(0.02)
    engine.stop()
    await task
    assert inbox.received == ["u1", "u3"]
    rows = {
        r["user_id"]: dict(r)
        for r in ctx.conn.execute("SELECT user_id, state, reason, attempts FROM deliveries WHERE run_id='svc'")
    }
    assert rows["u2"] == {"user_id": "u2", "state": "skipped", "reason": "preference_off", "attempts": 0}
    assert rows["u3"]["state"] == "sent"
    attempts = ctx.conn.execute(
        "SELECT d.user_id, a.number, a.outcome FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
        "ORDER BY d.user_id"
    ).fetchall()
    assert [tuple(a) for a in attempts] == [("u1", 1, "sent"), ("u3", 1, "sent")]  # no attempt for u2
    ctx.conn.close()


async def test_pages_are_read_in_the_reader_thread_not_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feeder's SQLite reads let the GIL go; made on the event loop's thread they would leave it
    waiting behind the planner's thread. They run in the engine's reader thread, on its connection."""
    ws = make_workspace(tmp_path, providers={"inapp": {"type": "inapp", "rate": 5000, "concurrency": 2}})
    settings = load_settings(ws.config)
    ctx = Context.open(settings)
    directory.upsert_users(ctx.conn, [User(user_id=f"u{i}", email=f"u{i}@example.com") for i in range(5)])
    template = ctx.templates.get("welcome")
    _service_run(ctx.conn)
    readers: list[str] = []
    pending_page = outbox.pending_page

    def recorded(conn: sqlite3.Connection, *args: Any, **kwargs: Any) -> list[sqlite3.Row]:
        readers.append(threading.current_thread().name)
        assert conn is not ctx.conn  # the reader's own connection
        return pending_page(conn, *args, **kwargs)

    monkeypatch.setattr(outbox, "pending_page", recorded)
    inbox = GatedInbox()
    inbox.gate.set()
    engine = Engine(settings, ctx.conn, ctx.templates, providers={"inapp": inbox}, backend=LocalBackend())
    task = asyncio.create_task(engine.run("svc", service=True))
    await engine.ready()
    engine.submit("svc", _welcome_items(template.version, range(5)))
    for _ in range(250):
        if runs.counts(ctx.conn, "svc") == {"inapp": {"sent": 5}}:
            break
        await asyncio.sleep(0.02)
    engine.stop()
    await task
    assert sorted(inbox.received) == [f"u{i}" for i in range(5)]
    assert readers and all(name.startswith("notifyctl-reader") for name in readers), readers
    ctx.conn.close()
