"""store.db.WriteLock: writers of one database queue on a flock instead of SQLite's sleeping busy handler."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from notifyctl.store.db import WriteLock


def test_a_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    db = tmp_path / "notifyctl.db"
    first, second = WriteLock(db), WriteLock(db)  # two open files, as in two processes
    order: list[str] = []
    holding = threading.Event()

    def other() -> None:
        holding.wait()
        with second.held():
            order.append("second")

    thread = threading.Thread(target=other)
    thread.start()
    with first.held():
        holding.set()
        time.sleep(0.2)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]  # it waited for the release
    assert (tmp_path / "notifyctl.db-writelock").stat().st_mode & 0o777 == 0o600
    first.close()
    second.close()


def test_without_a_file_it_is_a_no_op(tmp_path: Path) -> None:
    for lock in (WriteLock(":memory:"), WriteLock(tmp_path / "missing-dir" / "db")):
        with lock.held(), lock.held():  # not even reentrancy is needed: nothing is locked
            pass
        lock.close()
