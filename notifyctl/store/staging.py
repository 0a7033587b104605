"""The scratch database of `users import`: valid users staged as the file is read, then copied into
the directory by INSERT ... SELECT, batch by batch, as `directory.upsert_users` writes them.

The staging process (see `intake/users_import.py`) imports this module, so it imports little at
the top: the directory module (and pydantic with it) only where it is needed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from notifyctl.store.db import dumps, iso, transaction

UserFields = tuple[
    str, str | None, str | None, str | None, str | None, list[str], str | None, str | None, dict[str, Any]
]
"""A valid user's fields in `User` order: user_id, email, phone, locale, timezone, push_tokens,
webhook_url, webhook_secret, attributes."""

Counts = tuple[int, int]
"""Users and devices rows staged."""

Duplicate = tuple[int, int]
"""A user_id given again in the same file: (its line, the line it was first given on)."""

_SCHEMA = "notifyctl_users_import"  # the scratch database, attached for the copy

# users.endpoint: NULL no endpoint (no webhook_url), 0 a new secret (an existing one is kept), 1 the
# secret the file gave. line: the row's line in the file. chunks: users and devices rows staged
# after each chunk (a batch ends at the end of a chunk).
_STAGE_SCHEMA = """
    CREATE TABLE users (user_id, email, phone, locale, timezone, webhook_url, attributes, secret, endpoint, line);
    CREATE TABLE devices (user_id, token, line);
    CREATE TABLE chunks (users, devices)"""
_NEW_SECRET, _GIVEN_SECRET = 0, 1
# A staged token is a push address (addresses.push_address): `apns:<token>` is an APNs token.
_TOKEN = "CASE WHEN substr(token, 1, 5) = 'apns:' THEN substr(token, 6) ELSE token END"
_SERVICE = "CASE WHEN substr(token, 1, 5) = 'apns:' THEN 'apns' ELSE 'fcm' END"


def create_stage(path: str) -> sqlite3.Connection:
    """A new scratch database at `path` (no journal, no syncing: it is thrown away on any failure)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; {_STAGE_SCHEMA}")
    return conn


def stage_chunk(conn: sqlite3.Connection, users: Iterable[UserFields], lines: Iterable[int], staged: Counts) -> Counts:
    """Append a chunk of users (read on `lines`) to the scratch tables in one transaction, after
    `staged` rows; returns the rows staged now."""
    conn.execute("BEGIN")
    user_rows: list[tuple[Any, ...]] = []
    device_rows: list[tuple[str, str, int]] = []
    for (user_id, email, phone, locale, timezone, push_tokens, webhook_url, webhook_secret, attributes), line in zip(
        users, lines, strict=True
    ):
        # As upsert_users: a given secret needs a URL; a URL without a secret gets a new one.
        secret: str | None = None
        endpoint: int | None = None
        if webhook_url and webhook_secret:
            secret, endpoint = webhook_secret, _GIVEN_SECRET
        elif webhook_url:
            secret, endpoint = _new_secret(), _NEW_SECRET
        user_rows.append(
            (user_id, email, phone, locale, timezone, webhook_url, dumps(attributes), secret, endpoint, line)
        )
        if push_tokens:
            device_rows.extend((user_id, token, line) for token in push_tokens)
    conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", user_rows)
    conn.executemany("INSERT INTO devices VALUES (?, ?, ?)", device_rows)
    counts = (staged[0] + len(user_rows), staged[1] + len(device_rows))
    conn.execute("INSERT INTO chunks VALUES (?, ?)", counts)
    conn.execute("COMMIT")
    return counts


def duplicates(stage: Path) -> list[Duplicate]:
    """Every row of the staged file whose user_id an earlier row gave already, in line order."""
    conn = sqlite3.connect(stage, isolation_level=None)
    try:
        # One sort of the ids (about a second for a million), and their rows only when some repeat.
        repeated = conn.execute("SELECT user_id FROM users GROUP BY user_id HAVING count(*) > 1").fetchall()
        if not repeated:
            return []
        conn.execute("CREATE TEMP TABLE repeated (user_id PRIMARY KEY)")
        conn.executemany("INSERT INTO repeated VALUES (?)", repeated)
        rows = conn.execute(
            "SELECT user_id, line FROM users WHERE user_id IN (SELECT user_id FROM temp.repeated)"
            " ORDER BY user_id, line"
        ).fetchall()
    finally:
        conn.close()
    found: list[Duplicate] = []
    first: dict[str, int] = {}
    for user_id, line in rows:
        if user_id in first:
            found.append((line, first[user_id]))
        else:
            first[user_id] = line
    return sorted(found)


def drop_lines(stage: Path, lines: Iterable[int]) -> None:
    """Leave the staged rows of these lines (users and their devices) out of the copy."""
    conn = sqlite3.connect(stage, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("CREATE TEMP TABLE dropped (line INTEGER PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO dropped VALUES (?)", ((line,) for line in lines))
        conn.execute("DELETE FROM users WHERE line IN (SELECT line FROM dropped)")
        conn.execute("DELETE FROM devices WHERE line IN (SELECT line FROM dropped)")
        conn.execute("COMMIT")
    finally:
        conn.close()


def _new_secret() -> str:
    # Imported on first use: the directory module brings pydantic, which the staging process rarely needs.
    from notifyctl.store.directory import new_webhook_secret

    return new_webhook_secret()


def copy_staged(conn: sqlite3.Connection, stage: Path, batch: int) -> int:
    """Upsert every user staged in `stage` into the directory, `batch` users per transaction (a
    batch ends at the end of a chunk); returns how many."""
    written = 0
    conn.execute(f"ATTACH DATABASE ? AS {_SCHEMA}", (str(stage),))
    try:
        chunks: list[Counts] = [
            (users, devices)
            for users, devices in conn.execute(f"SELECT users, devices FROM {_SCHEMA}.chunks ORDER BY rowid")
        ]
        after: Counts = (0, 0)
        for i, upto in enumerate(chunks):
            if upto[0] % batch == 0 or i == len(chunks) - 1:
                written += _copy(conn, after, upto)
                after = upto
    finally:
        conn.execute(f"DETACH DATABASE {_SCHEMA}")
    return written


def _copy(conn: sqlite3.Connection, after: Counts, upto: Counts) -> int:
    """What `directory.upsert_users` writes for the staged users and devices with rowids in
    (after, upto], in its order; one transaction. Returns how many users."""
    from notifyctl.store import directory

    users = f"FROM {_SCHEMA}.users WHERE rowid > :low AND rowid <= :high"
    now = iso()
    with transaction(conn):
        copied = conn.execute(
            f"INSERT INTO main.users ({directory.USERS_COLUMNS}) SELECT user_id, email, phone, locale, timezone,"
            f" webhook_url, attributes, :now, :now {users} {directory.USERS_ON_CONFLICT}",
            {"low": after[0], "high": upto[0], "now": now},
        ).rowcount
        conn.execute(
            f"INSERT INTO main.devices ({directory.DEVICES_COLUMNS}) SELECT user_id, {_TOKEN}, NULL, :now, :now,"
            f" {_SERVICE} FROM {_SCHEMA}.devices WHERE rowid > :low AND rowid <= :high {directory.DEVICES_ON_CONFLICT}",
            {"low": after[1], "high": upto[1], "now": now},
        )
        for endpoint, on_conflict in (
            (_NEW_SECRET, directory.ENDPOINT_NEW_SECRET_ON_CONFLICT),
            (_GIVEN_SECRET, directory.ENDPOINT_GIVEN_SECRET_ON_CONFLICT),
        ):
            conn.execute(
                f"INSERT INTO main.endpoints (user_id, url, secret) SELECT user_id, webhook_url, secret {users}"
                f" AND endpoint = :endpoint {on_conflict}",
                {"low": after[0], "high": upto[0], "endpoint": endpoint},
            )
    return int(copied)  # fewer than the range where rows were dropped (drop_lines)
