"""`-` for standard input wherever a file is read, kept as a private copy under the state directory.

A copy is needed because an input is read twice (validated whole, then planned) and, for a run,
may be read again by `notifyctl resume` after a crash: a run's copy stays until the run has planned
its last row, and goes then (`release`); any other copy goes when the command ends. A copy left by
a process killed before its run was created is swept by a later copy (`sweep`) once a day old.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from notifyctl.settings import Settings
from notifyctl.store import runs

STDIN = "-"
SWEEP_AFTER_S = 24 * 3600.0


def is_stdin(value: str | Path | None) -> bool:
    """Whether a file argument names standard input."""
    return value is not None and str(value) == STDIN


def spool_dir(settings: Settings) -> Path:
    """The state directory's `spool/`, where copies of standard input live."""
    return settings.state_path / "spool"


def spool(settings: Settings, stream: BinaryIO | None = None) -> Path:
    """Copy standard input (or `stream`) into a new private file under the spool directory."""
    from notifyctl.intake.spool import spool_stdin  # here: a one-off send needs no parsers

    folder = spool_dir(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return spool_stdin(stream if stream is not None else sys.stdin.buffer, folder)


def release(settings: Settings, conn: sqlite3.Connection, path: Path) -> None:
    """Remove a copy of standard input unless a run has yet to plan from it."""
    path = path.resolve()
    if path.parent != spool_dir(settings).resolve() or runs.input_needed(conn, str(path)):
        return
    with suppress(FileNotFoundError):
        path.unlink()


def release_run_input(settings: Settings, conn: sqlite3.Connection, run_id: str) -> None:
    """After a run worked: its copy of standard input goes once it is planned to the end."""
    run = runs.get_run(conn, run_id)
    if run is not None and run.audience_path:
        release(settings, conn, Path(run.audience_path))


def sweep(settings: Settings, conn: sqlite3.Connection, now: float | None = None) -> None:
    """Remove copies left behind by a process killed before its run existed (a day old, no run needs them)."""
    folder = spool_dir(settings)
    cutoff = (time.time() if now is None else now) - SWEEP_AFTER_S
    for path in folder.glob("notifyctl-stdin-*"):
        with suppress(OSError):
            if path.stat().st_mtime < cutoff:
                release(settings, conn, path)


@contextmanager
def input_file(settings: Settings, conn: sqlite3.Connection, given: Path) -> Iterator[Path]:
    """`given`, or for `-` a copy of standard input, removed on the way out unless a run needs it."""
    if not is_stdin(given):
        yield given
        return
    sweep(settings, conn)
    path = spool(settings)
    try:
        yield path
    finally:
        release(settings, conn, path)
