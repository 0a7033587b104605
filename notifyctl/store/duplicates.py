"""A scratch SQLite file that finds repeated identities among millions without holding them in memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

_BATCH = 10_000  # identities per INSERT


class DuplicateFinder:
    """Identities (with the line they were read on) spilled to a temporary SQLite file in
    `directory`, so 1M rows do not live in a Python set."""

    def __init__(self, directory: str) -> None:
        self.conn = sqlite3.connect(Path(directory) / "identities.sqlite")
        self.conn.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;"
            "CREATE TABLE identities (identity BLOB NOT NULL, line INTEGER NOT NULL);"
        )
        self.batch: list[tuple[bytes, int]] = []

    def add(self, identity: bytes, line: int) -> None:
        """Note that `identity` was read on `line`."""
        self.batch.append((identity, line))
        if len(self.batch) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the identities noted so far."""
        with self.conn:
            self.conn.executemany("INSERT INTO identities VALUES (?, ?)", self.batch)
        self.batch.clear()

    def duplicates(self) -> Iterator[tuple[int, int]]:
        """(line, first line) of every repeated identity, in line order."""
        self.flush()
        yield from self.conn.execute(
            """SELECT i.line, f.first_line FROM identities AS i
               JOIN (SELECT identity, MIN(line) AS first_line FROM identities
                     GROUP BY identity HAVING COUNT(*) > 1) AS f ON i.identity = f.identity
               WHERE i.line > f.first_line ORDER BY i.line"""
        )

    def close(self) -> None:
        """Close the scratch file (its directory is the caller's to delete)."""
        self.conn.close()
