"""A service-mode run (what `notifyctl serve` keeps open): deferred deliveries go out when due,
without waiting for a restart or `resume --due` (which skip a run whose process is alive)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from notifyctl.app.context import Context
from notifyctl.pipeline.planner import PlanItem
from notifyctl.settings import load_settings
from notifyctl.store import runs
from tests.workspace import make_workspace


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_deferred_deliveries_of_a_service_run_are_released_when_due(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, extra='[quiet_hours]\nchannels = ["email"]\n')
    ws.write("users.csv", "user_id,email,timezone,first_name\nu1,a@example.com,America/New_York,Ada\n")
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    clock = FakeClock(datetime(2026, 11, 20, 7, 0, tzinfo=UTC))  # 02:00 in New York: quiet hours
    ctx = Context.open(load_settings(ws.config), clock)
    template = ctx.templates.get("welcome")
    runs.create_run(
        ctx.conn,
        run_id="svc",
        kind="api",
        template="(api)",
        template_version="-",
        category="-",
        channels=["email"],
        state="running",
    )
    engine = ctx.engine()
    task = asyncio.create_task(engine.run("svc", service=True))
    await engine.ready()
    item = PlanItem(
        line=1,
        end_offset=0,
        template="welcome",
        template_version=template.version,
        category="marketing",
        event_id="e1",
        channels=["email"],
        user_id="u1",
        data={"product_name": "Acme"},
    )
    planned = engine.submit("svc", [item])
    assert [d["state"] for d in planned.deliveries] == ["deferred"]

    assert await engine.release_due("svc") == 0  # not yet
    clock.now = datetime(2026, 11, 20, 13, 1, tzinfo=UTC)  # 08:01 in New York
    assert await engine.release_due("svc") == 1
    for _ in range(200):
        if runs.counts(ctx.conn, "svc") == {"email": {"sent": 1}}:
            break
        await asyncio.sleep(0.02)
    engine.stop()
    await task
    assert runs.counts(ctx.conn, "svc") == {"email": {"sent": 1}}
    assert len(list((ws.root / "outbox").glob("*.eml"))) == 1
