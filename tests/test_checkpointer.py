"""A run's busy writers leave WAL checkpoints to a thread of their own (store.db.Checkpointer)."""

from __future__ import annotations

import time
from pathlib import Path

from notifyctl.store.db import BUSY_WRITER_AUTOCHECKPOINT, Checkpointer, connect
from notifyctl.store.ledger import Ledger


def _fill(conn, rows: int) -> None:  # type: ignore[no-untyped-def]
    conn.execute("CREATE TABLE IF NOT EXISTS blob (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO blob (body) VALUES (?)", [("x" * 3000,) for _ in range(rows)])
    conn.execute("COMMIT")


def test_a_busy_writer_does_not_checkpoint_in_its_commits_the_checkpointer_does(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    writer = connect(db, autocheckpoint=BUSY_WRITER_AUTOCHECKPOINT)
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BUSY_WRITER_AUTOCHECKPOINT
    before = db.stat().st_size
    _fill(writer, 3000)  # ~9 MB: past SQLite's default of 1,000 pages, which would have checkpointed
    wal = Path(f"{db}-wal")
    assert wal.stat().st_size > 8_000_000 and db.stat().st_size == before  # still all in the log
    checkpointer = Checkpointer(db, every_s=0.01)
    checkpointer.start()
    try:
        deadline = time.monotonic() + 10
        while db.stat().st_size < 8_000_000 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        checkpointer.stop()
    assert db.stat().st_size > 8_000_000  # copied into the database file by the checkpointer's thread
    assert checkpointer.checkpoints >= 1
    # The writer goes on; the log is reused from its start once everything in it was copied.
    _fill(writer, 10)
    assert writer.execute("SELECT count(*) FROM blob").fetchone()[0] == 3010
    writer.close()


def test_a_plain_connection_keeps_sqlites_default(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    conn.close()


async def test_the_ledger_is_a_busy_writer(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "db.sqlite")
    await ledger.start()
    try:
        assert await ledger.submit(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == (
            BUSY_WRITER_AUTOCHECKPOINT
        )
    finally:
        await ledger.stop()
