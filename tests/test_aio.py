"""Every process that sends runs its event loop through notifyctl.aio.run (uvloop where installed)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from notifyctl import aio

PACKAGE = Path(aio.__file__).resolve().parent


def test_run_uses_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert issubclass(aio.run(loop_type()), uvloop.Loop)


def test_run_returns_the_result_and_raises_the_error() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def boom() -> None:
        raise ValueError("boom")

    assert aio.run(answer()) == 42
    with pytest.raises(ValueError, match="boom"):
        aio.run(boom())


def test_no_module_starts_an_event_loop_of_its_own() -> None:
    """A broadcast's sibling sender processes ran on asyncio's pure-Python loop while the parent ran
    on uvloop (a third of the sibling's CPU went to the selector loop's transports): every entry
    point goes through aio.run."""
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "aio.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\b(asyncio|uvloop)\.run\(|new_event_loop\(|run_until_complete\(", line)
    ]
    assert offenders == []
    # The sibling sender's entry point is one of them.
    assert "aio.run(_main(args))" in (PACKAGE / "backends" / "processes.py").read_text(encoding="utf-8")
