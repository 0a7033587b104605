"""`notifyctl doctor` on what the installation writes to and what it left unfinished: the
database's folder, the outbox folder, runs stuck `running` and scheduled runs overdue."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

from notifyctl.app.checkup import Check, fail, ok, warn


def _blocking_file(path: Path) -> Path | None:
    """The first part of `path` that is a file where a folder is needed (`users.csv/outbox`)."""
    for parent in [*reversed(path.parents), path]:
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> bool:
    """Whether a file can be made in `folder`: tried, not inferred from the mode bits (root, a
    read-only mount or an immutable folder would fool those)."""
    probe = folder / f".notifyctl-doctor-{os.getpid()}-{os.urandom(3).hex()}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        return False
    probe.unlink(missing_ok=True)
    return True


def check_database_dir(path: Path) -> list[Check]:
    """SQLite writes its journal files (-wal, -shm) next to the database: its folder must be writable."""
    area = "database"
    blocker = _blocking_file(path.parent)
    if blocker is not None:
        return [fail(area, f"cannot keep a database at {path}: {blocker} is a file, not a folder")]
    folder = _nearest_existing(path.parent)
    if not _writable(folder):
        return [
            fail(
                area,
                f"folder {folder} is not writable: SQLite keeps its journal files next to the database, "
                f"so nothing can be recorded; fix: chmod u+w {folder} (or set database to a writable place)",
            )
        ]
    if path.exists() and not os.access(path, os.W_OK):
        return [fail(area, f"{path} is read-only: nothing can be recorded; fix: chmod 600 {path}")]
    return []


def check_outbox_folder(area: str, folder: Path) -> list[Check]:
    """The outbox provider's folder: a folder (or one that can be made), writable."""
    blocker = _blocking_file(folder)
    if blocker is not None:
        return [fail(area, f"outbox path {folder} is under {blocker}, a file: no email could be written")]
    existing = _nearest_existing(folder)
    if not _writable(existing):
        return [fail(area, f"outbox folder {existing} is not writable: no email could be written")]
    return []


def check_runs(path: Path, now: datetime) -> list[Check]:
    """Runs `running` with no live process on them (stuck: a crash, a kill) and scheduled runs whose
    time has passed (is `notifyctl resume --due` in cron?)."""
    from notifyctl.store import health, locks, runs
    from notifyctl.store.db import iso

    if not path.exists():
        return []
    area = "runs"
    try:
        conn = health.open_read_only(path)
        conn.row_factory = sqlite3.Row
        try:
            found = runs.stuck_or_overdue(conn, iso(now))
            stuck = [row for row in found if row["state"] == "running" and not locks.live_holder(conn, f"run:{row[0]}")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # reported by the database checks
        return [warn(area, f"cannot read the runs: {exc}")]
    checks = [
        warn(
            area,
            f"run {row['run_id']} is stuck: running, and no notifyctl process is working on it; "
            f"`notifyctl resume {row['run_id']}` finishes it, `notifyctl runs cancel {row['run_id']}` ends it",
        )
        for row in stuck
    ]
    checks.extend(
        warn(
            area,
            f"run {row['run_id']} was scheduled for {row['send_at']} and has not started: "
            "is `notifyctl resume --due` in cron (with --config)?",
        )
        for row in found
        if row["state"] == "scheduled"
    )
    return checks or [ok(area, "no run stuck, no scheduled run overdue")]
