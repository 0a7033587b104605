"""The SQL of the right to erasure: hashed suppressions, and a forgotten user's rows.

Every address a forgotten user had is kept on the suppression list as a keyed hash only
(`suppression_hashes`): an audience file that brings the address back is still refused, although
nobody can read the address out of the database. The user's directory rows go; their deliveries,
attempts, dead letters and audit events stay, with every mention of them replaced by keyed labels.
The use case that puts these together is notifyctl/app/erase.py; the hashing is
notifyctl/security/erasure.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from notifyctl.addresses import push_address
from notifyctl.security.erasure import ERASED_PREFIX, address_hash
from notifyctl.store.db import dumps, in_chunks, loads

ERASED_REASON = "erased"
PERSONAL_TABLES = ("devices", "endpoints", "preferences", "inbox", "users")


def hashed_suppressed(
    conn: sqlite3.Connection, channel: str, normalized_address: str, keys: Sequence[bytes]
) -> str | None:
    """The suppression reason if a forgotten user's address is on the hashed list under one of
    `keys` (every key that made hashes), else None."""
    for key in keys:
        row = conn.execute(
            "SELECT reason FROM suppression_hashes WHERE channel=? AND address_hash=?",
            (channel, address_hash(channel, normalized_address, key)),
        ).fetchone()
        if row is not None:
            return str(row[0])
    return None


def hashed_suppressed_among(
    conn: sqlite3.Connection, channel: str, normalized_addresses: list[str], keys: Sequence[bytes]
) -> dict[str, str]:
    """{address: reason} for those of the addresses on the hashed list under one of `keys` (no
    hashing when the list is empty)."""
    if conn.execute("SELECT 1 FROM suppression_hashes WHERE channel=? LIMIT 1", (channel,)).fetchone() is None:
        return {}
    by_hash = {address_hash(channel, a, key): a for key in keys for a in normalized_addresses}
    found: dict[str, str] = {}
    for chunk, marks in in_chunks(list(by_hash)):
        for digest, reason in conn.execute(
            f"SELECT address_hash, reason FROM suppression_hashes WHERE channel=? AND address_hash IN ({marks})",
            [channel, *chunk],
        ):
            found[by_hash[digest]] = reason
    return found


def user_known(conn: sqlite3.Connection, user_id: str) -> bool:
    """Whether the user is in the directory or in the audit log."""
    known = conn.execute("SELECT 1 FROM users WHERE user_id=?", (user_id,)).fetchone()
    in_audit = conn.execute("SELECT 1 FROM deliveries WHERE user_id=? LIMIT 1", (user_id,)).fetchone()
    return known is not None or in_audit is not None


def audit_addresses(conn: sqlite3.Connection, user_id: str) -> list[tuple[str, str]]:
    """(channel, address) of the user's deliveries, as the audit log spells them."""
    rows = conn.execute(
        "SELECT DISTINCT channel, address FROM deliveries WHERE user_id=? AND address IS NOT NULL", (user_id,)
    )
    return [(str(channel), str(address)) for channel, address in rows]


def user_addresses(conn: sqlite3.Connection, user_id: str) -> set[tuple[str, str]]:
    """(channel, address) of everything the user could be reached at, now or in the audit log (not
    normalised; audit addresses already erased are left out)."""
    # In-app messages are addressed by user id: suppressed too, or a directory sync that brings the
    # user back would let a run planned before the erasure write to their inbox again.
    found: set[tuple[str, str]] = {("inapp", user_id)}
    user = conn.execute("SELECT email, phone, webhook_url FROM users WHERE user_id=?", (user_id,)).fetchone()
    if user is not None:
        for channel, value in (("email", user["email"]), ("sms", user["phone"]), ("webhook", user["webhook_url"])):
            if value:
                found.add((channel, value))
    for token, service in conn.execute("SELECT token, service FROM devices WHERE user_id=?", (user_id,)):
        found.add(("push", push_address(token, service)))
    endpoint = conn.execute("SELECT url FROM endpoints WHERE user_id=?", (user_id,)).fetchone()
    if endpoint is not None:
        found.add(("webhook", endpoint["url"]))
    for channel, address in audit_addresses(conn, user_id):
        if not address.startswith(ERASED_PREFIX):
            found.add((channel, address))
    return found


def hash_suppression(conn: sqlite3.Connection, channel: str, normalized_address: str, key: bytes, now: str) -> None:
    """Keep the address suppressed as a keyed hash only, with the reason of its plain suppression
    (ERASED_REASON when it had none); the plain row goes."""
    row = conn.execute(
        "SELECT reason FROM suppressions WHERE channel=? AND address=?", (channel, normalized_address)
    ).fetchone()
    reason = str(row["reason"]) if row is not None else ERASED_REASON
    conn.execute(
        """INSERT INTO suppression_hashes (channel, address_hash, reason, created) VALUES (?, ?, ?, ?)
           ON CONFLICT(channel, address_hash) DO NOTHING""",
        (channel, address_hash(channel, normalized_address, key), reason, now),
    )
    conn.execute("DELETE FROM suppressions WHERE channel=? AND address=?", (channel, normalized_address))


def delete_personal_rows(conn: sqlite3.Connection, user_id: str) -> dict[str, int]:
    """Delete the user's devices, endpoint, preferences, inbox and directory entry; {table: rows}."""
    return {
        table: conn.execute(f"DELETE FROM {table} WHERE user_id=?", (user_id,)).rowcount for table in PERSONAL_TABLES
    }


def erase_from_audit(
    conn: sqlite3.Connection, user_id: str, user_label: str, replacements: dict[str, str], now: str
) -> int:
    """Rewrite the user's deliveries, their attempts and dead letters: the user id becomes
    `user_label`, every value in `replacements` its label, the message data and rendered envelopes
    are dropped. Returns the number of deliveries."""
    delivery_ids = [row[0] for row in conn.execute("SELECT id FROM deliveries WHERE user_id=?", (user_id,))]
    for delivery_id in delivery_ids:
        row = conn.execute("SELECT address, error_message FROM deliveries WHERE id=?", (delivery_id,)).fetchone()
        address = row["address"]
        conn.execute(
            "UPDATE deliveries SET user_id=?, address=?, data='{}', error_message=?, updated=? WHERE id=?",
            (user_label, replacements.get(address, address), _scrub(row["error_message"], replacements),
             now, delivery_id),
        )  # fmt: skip
        for attempt_id, message in conn.execute(
            "SELECT id, message FROM attempts WHERE delivery_id=?", (delivery_id,)
        ).fetchall():
            conn.execute("UPDATE attempts SET message=? WHERE id=?", (_scrub(message, replacements), attempt_id))
        dead = conn.execute(
            "SELECT envelope, error_message FROM dead_letters WHERE delivery_id=?", (delivery_id,)
        ).fetchone()
        if dead is not None:
            conn.execute(
                "UPDATE dead_letters SET envelope=?, error_message=? WHERE delivery_id=?",
                (_scrub_envelope(dead["envelope"], user_label, replacements),
                 _scrub(dead["error_message"], replacements), delivery_id),
            )  # fmt: skip
    return len(delivery_ids)


def relabel_audit_events(conn: sqlite3.Connection, user_id: str, user_label: str) -> int:
    """Audit events about the user name `user_label` instead; returns how many."""
    return conn.execute("UPDATE audit_events SET subject=? WHERE subject=?", (user_label, user_id)).rowcount


def _scrub(text: str | None, replacements: dict[str, str]) -> str | None:
    if not text:
        return text
    # Longest first: the user id may be part of an address ("grace-77@example.com").
    for value, label in sorted(replacements.items(), key=lambda item: -len(item[0])):
        text = text.replace(value, label)
    return text


def _scrub_envelope(raw: str | None, user_label: str, replacements: dict[str, str]) -> str | None:
    envelope = loads(raw)
    if not isinstance(envelope, dict):
        return raw
    address = str(envelope.get("address") or "")
    envelope["address"] = replacements.get(address, address)
    envelope["user_id"] = user_label
    # The rendered parts are the message itself (names, order details) and the headers carry the
    # user's unsubscribe link: nothing of them can be kept.
    envelope["parts"] = {}
    envelope["headers"] = {}
    envelope["erased"] = True
    return dumps(envelope)
