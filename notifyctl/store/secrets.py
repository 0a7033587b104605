"""The installation's secret: made at random for this database and kept in it, or given by the
configuration (`unsubscribe_secret`, or NOTIFYCTL_UNSUBSCRIBE_SECRET).

It signs one-click unsubscribe links and keys the erasure hashes (notifyctl/security/secret.py).
Every secret that ever did is kept here: erasure hashes made with one stay matched for good, and
links signed with one keep working for `unsubscribe_grace_days` after another took over. The first
use of a database without a configured secret makes its own (32 random bytes); a configured one
that changes, or goes away, retires the one before.

A database written by an earlier release holds links and hashes made with that release's secret,
which it never stored: migration 0006 marks such a database with a row without a secret, and its
first use here settles it as the configuration's `unsubscribe_secret` (the earlier release read the
same file) or, without one, that release's built-in default — accepted from such a database only,
never used to sign.

`installation_secret(conn, settings)` is the one accessor: called once per engine, policy, context
or opt-out, never per message.
"""

from __future__ import annotations

import secrets
import sqlite3
from datetime import datetime

from notifyctl.security.secret import InstallationSecret
from notifyctl.settings import Settings
from notifyctl.store.db import iso, parse_iso, transaction

PREVIOUS_RELEASE_DEFAULT = "change-me-unsubscribe-secret"  # releases before 0006, without a configured one
GENERATED, CONFIGURED, PREVIOUS_RELEASE = "generated", "configured", "previous release"

_Row = tuple[str | None, str, str | None]  # secret, origin, retired


def _rows(conn: sqlite3.Connection) -> list[_Row]:
    return [
        (row[0], str(row[1]), row[2])
        for row in conn.execute("SELECT secret, origin, retired FROM installation_secrets ORDER BY id")
    ]


def _signing(rows: list[_Row]) -> list[_Row]:
    return [row for row in rows if row[2] is None]


def _settled(rows: list[_Row], configured: str | None) -> bool:
    signing = _signing(rows)
    if any(secret is None for secret, _, _ in rows) or len(signing) != 1:
        return False
    secret, origin, _ = signing[0]
    return secret == configured if configured is not None else origin == GENERATED


def _settle(conn: sqlite3.Connection, rows: list[_Row], configured: str | None, now: str) -> None:
    """Make the wanted secret the one signing, and retire the others from now on."""
    known = {secret for secret, _, _ in rows if secret is not None}
    if any(secret is None for secret, _, _ in rows):
        previous = configured if configured is not None else PREVIOUS_RELEASE_DEFAULT
        if previous in known:
            conn.execute("DELETE FROM installation_secrets WHERE secret IS NULL")
        else:
            conn.execute("UPDATE installation_secrets SET secret=? WHERE secret IS NULL", (previous,))
            known.add(previous)
    if configured is not None:
        wanted = configured
        if wanted not in known:
            conn.execute(
                "INSERT INTO installation_secrets (secret, origin, created) VALUES (?, ?, ?)", (wanted, CONFIGURED, now)
            )
    else:
        generated = [secret for secret, origin, _ in rows if origin == GENERATED and secret is not None]
        if generated:
            wanted = generated[-1]
        else:
            wanted = secrets.token_urlsafe(32)
            conn.execute(
                "INSERT INTO installation_secrets (secret, origin, created) VALUES (?, ?, ?)", (wanted, GENERATED, now)
            )
    conn.execute("UPDATE installation_secrets SET retired=? WHERE retired IS NULL AND secret != ?", (now, wanted))
    conn.execute("UPDATE installation_secrets SET retired=NULL WHERE secret = ?", (wanted,))


def installation_secret(
    conn: sqlite3.Connection, settings: Settings, now: datetime | None = None
) -> InstallationSecret:
    """The secret that signs now and the older ones; settled first (one short write transaction)
    when the configuration changed since the last use, or the database is new or upgraded."""
    configured = settings.unsubscribe_secret
    rows = _rows(conn)
    if not _settled(rows, configured):
        with transaction(conn):
            rows = _rows(conn)  # again, under the write lock: another process may have settled it
            if not _settled(rows, configured):
                _settle(conn, rows, configured, iso(now))
                rows = _rows(conn)
    current = next(str(secret) for secret, _, retired in rows if retired is None)
    older = tuple((str(secret), parse_iso(retired)) for secret, _, retired in rows if retired is not None)
    return InstallationSecret(current, older)
