"""`processes = "auto"` (the default): a sender process per core for big runs, one for small ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from notifyctl.app import sizing
from notifyctl.app.context import Context
from notifyctl.settings import load_settings
from notifyctl.store import runs
from tests.workspace import make_workspace


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def a_run(ctx: Context, root: Path, lines: int, channels: list[str]) -> runs.Run:
    audience = root / "audience.csv"
    audience.write_text("user_id\n" + "".join(f"u{i}\n" for i in range(lines)))
    runs.create_run(
        ctx.conn,
        run_id="r1",
        kind="broadcast",
        template="welcome",
        template_version="v",
        category="marketing",
        channels=channels,
        state="running",
        audience_path=str(audience),
    )
    run = runs.get_run(ctx.conn, "r1")
    assert run is not None
    return run


@pytest.mark.parametrize(
    ("lines", "channels", "big"),
    [
        pytest.param(100, ["email"], False, id="small"),
        pytest.param(sizing.AUTO_PROCESSES_FROM + 10, ["email"], True, id="big"),
        pytest.param(sizing.AUTO_PROCESSES_FROM // 2 + 10, ["email", "inapp"], True, id="big-over-two-channels"),
    ],
)
def test_auto_gives_big_runs_a_process_per_core(tmp_path: Path, lines: int, channels: list[str], big: bool) -> None:
    ws = make_workspace(tmp_path)
    ctx = Context.open(load_settings(ws.config))
    assert ctx.settings.processes == "auto"
    run = a_run(ctx, tmp_path, lines, channels)
    cores = min(usable_cores(), sizing.AUTO_PROCESSES_MAX)
    expected = cores if big and cores >= 2 else 1
    assert sizing._sender_processes(ctx, run) == expected
    ctx.conn.close()


def test_auto_keeps_one_process_when_the_rate_limit_is_low(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, providers={"outbox": {"type": "outbox", "path": "outbox", "rate": 200}})
    ctx = Context.open(load_settings(ws.config))
    run = a_run(ctx, tmp_path, sizing.AUTO_PROCESSES_FROM * 2, ["email"])
    assert sizing._sender_processes(ctx, run) == 1  # 200/s: one process sends that easily
    ctx.conn.close()


def test_a_number_is_taken_as_given(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, top="processes = 3")
    ctx = Context.open(load_settings(ws.config))
    assert sizing._sender_processes(ctx, a_run(ctx, tmp_path, 10, ["email"])) == 3
    ctx.conn.close()


def test_processes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = make_workspace(tmp_path)
    monkeypatch.setenv("NOTIFYCTL_PROCESSES", "2")
    assert load_settings(ws.config).processes == 2
    monkeypatch.setenv("NOTIFYCTL_PROCESSES", "auto")
    assert load_settings(ws.config).processes == "auto"


def test_the_progress_bar_takes_the_whole_runs_counts() -> None:
    from notifyctl.cli.progress import ChannelProgress

    progress = ChannelProgress(enabled=False)
    progress.planned("webhook", "pending", 10)
    progress.outcome("webhook", "sent")
    progress.sync({"webhook": {"sent": 6, "skipped": 1, "pending": 2, "inflight": 1}})
    assert progress.totals == {"webhook": 10}
    assert progress.done == {"webhook": 7}
    assert progress.by_state == {"webhook": {"sent": 6, "skipped": 1}}
