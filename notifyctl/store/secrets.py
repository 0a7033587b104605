"""The installation's secret: made at random for this database and kept in it, or given by the
configuration (`unsubscribe_secret`, or NOTIFYCTL_UNSUBSCRIBE_SECRET).

It signs one-click unsubscribe links and keys the erasure hashes (notifyctl/security/secret.py).
Every secret that ever did is remembered here: erasure hashes made with one stay matched for good,
and links signed with one made here keep working for `unsubscribe_grace_days` after another took
over. A configured secret is never copied into the database: only its fingerprint (to notice that
the configuration changed) and the erasure key derived from it, both one-way; links signed with a
configured secret that was replaced verify while `unsubscribe_previous_secrets` lists it. The first
use of a database without a configured secret makes its own (32 random bytes); a configured one
that changes, or goes away, retires the one before.

A database written by an earlier release holds links and hashes made with that release's secret,
which it never stored: migration 0006 marks such a database with a row without a fingerprint, and
its first use here settles it as the configuration's `unsubscribe_secret` (the earlier release read
the same file) or, without one, that release's built-in default — accepted from such a database
only, never used to sign.

`installation_secret(conn, settings)` is the one accessor: called once per engine, policy, context
or opt-out, never per message.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from notifyctl.security.erasure import erasure_key
from notifyctl.security.secret import InstallationSecret, fingerprint
from notifyctl.settings import Settings
from notifyctl.store.db import iso, parse_iso, transaction

PREVIOUS_RELEASE_DEFAULT = "change-me-unsubscribe-secret"  # releases before 0006, without a configured one
GENERATED, CONFIGURED, PREVIOUS_RELEASE = "generated", "configured", "previous release"


@dataclass(frozen=True)
class _Row:
    secret: str | None  # made here, or the previous release's public default; never a configured one
    fingerprint: str | None  # None: the mark of an upgraded database, not settled yet
    erasure_key: str | None
    origin: str
    retired: str | None


def _rows(conn: sqlite3.Connection) -> list[_Row]:
    query = "SELECT secret, fingerprint, erasure_key, origin, retired FROM installation_secrets ORDER BY id"
    return [_Row(row[0], row[1], row[2], str(row[3]), row[4]) for row in conn.execute(query)]


def _settled(rows: list[_Row], configured: str | None) -> bool:
    signing = [row for row in rows if row.retired is None]
    if any(row.fingerprint is None for row in rows) or len(signing) != 1:
        return False
    if configured is not None:
        return signing[0].fingerprint == fingerprint(configured)
    return signing[0].origin == GENERATED and signing[0].secret is not None


def _insert(conn: sqlite3.Connection, secret: str, origin: str, now: str, *, keep: bool) -> None:
    conn.execute(
        "INSERT INTO installation_secrets (secret, fingerprint, erasure_key, origin, created) VALUES (?, ?, ?, ?, ?)",
        (secret if keep else None, fingerprint(secret), erasure_key(secret).hex(), origin, now),
    )


def _settle(conn: sqlite3.Connection, rows: list[_Row], configured: str | None, now: str) -> None:
    """Make the wanted secret the one signing, and retire the others from now on."""
    known = {row.fingerprint for row in rows if row.fingerprint is not None}
    if any(row.fingerprint is None for row in rows):
        previous = configured if configured is not None else PREVIOUS_RELEASE_DEFAULT
        if fingerprint(previous) in known:
            conn.execute("DELETE FROM installation_secrets WHERE fingerprint IS NULL")
        else:
            conn.execute(
                "UPDATE installation_secrets SET secret=?, fingerprint=?, erasure_key=? WHERE fingerprint IS NULL",
                (None if configured is not None else previous, fingerprint(previous), erasure_key(previous).hex()),
            )
            known.add(fingerprint(previous))
    if configured is not None:
        wanted = fingerprint(configured)
        if wanted not in known:
            _insert(conn, configured, CONFIGURED, now, keep=False)
    else:
        generated = [row for row in rows if row.origin == GENERATED and row.secret is not None]
        if generated:
            wanted = str(generated[-1].fingerprint)
        else:
            made = secrets.token_urlsafe(32)
            wanted = fingerprint(made)
            _insert(conn, made, GENERATED, now, keep=True)
    conn.execute("UPDATE installation_secrets SET retired=? WHERE retired IS NULL AND fingerprint != ?", (now, wanted))
    conn.execute("UPDATE installation_secrets SET retired=NULL WHERE fingerprint = ?", (wanted,))


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
    current = configured if configured is not None else next(str(r.secret) for r in rows if r.retired is None)
    retired = [row for row in rows if row.retired is not None]
    return InstallationSecret(
        current,
        older=tuple((row.secret, parse_iso(row.retired)) for row in retired if row.secret is not None and row.retired),
        fallbacks=tuple(settings.unsubscribe_previous_secrets),
        retired_keys=tuple(bytes.fromhex(row.erasure_key) for row in retired if row.erasure_key),
    )
