"""Named locks in the database that die with their process (a run driven by one process at a time)."""

from __future__ import annotations

import os
import sqlite3

from notifyctl.store.db import iso, transaction


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
    return live_holder(conn, name) is not None


def live_holder(conn: sqlite3.Connection, name: str) -> int | None:
    """The pid of the live process holding a lock, or None."""
    row = conn.execute("SELECT pid FROM locks WHERE name=?", (name,)).fetchone()
    return int(row["pid"]) if row is not None and _pid_alive(row["pid"]) else None
