"""Right to erasure: forget a user's personal data, but never contact them again.

`forget_user` deletes the user's directory entry, devices, webhook endpoint, preferences and
in-app inbox, and replaces what the audit log says about them (user id and addresses in
deliveries, attempts and dead letters; user id in audit events) with keyed hashes, so the audit
keeps its counts and its shape without naming anyone. Every address the user had is kept on the
suppression list as a keyed hash only (`suppression_hashes`): an audience file that brings the
address back is still refused, although nobody can read the address out of the database.

The key is an operator secret (the unsubscribe secret by default): without it nobody can test
whether a given address is in the hashed list.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from typing import TYPE_CHECKING, Any

from notifyctl.addresses import AddressError, normalize_address
from notifyctl.errors import InputError
from notifyctl.store.db import dumps, in_chunks, iso, loads, record_event, transaction

if TYPE_CHECKING:
    from notifyctl.settings import Settings

ERASED_PREFIX = "erased:"
ERASED_REASON = "erased"


def erasure_key(settings: Settings) -> bytes:
    """The hashing key, derived from the unsubscribe secret (so that it is one secret less to manage)
    but domain-separated from it: an unsubscribe token never equals an erased address's hash."""
    return hmac.new(settings.unsubscribe_secret.encode(), b"notifyctl-erasure-v1", hashlib.sha256).digest()


def keyed_hash(value: str, key: bytes) -> str:
    """HMAC-SHA256 of `value` under `key`, hex."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def address_hash(channel: str, normalized_address: str, key: bytes) -> str:
    """The suppression-list form of an address: its channel is part of what is hashed."""
    return keyed_hash(f"{channel}\x1f{normalized_address}", key)


def erased_label(value: str, key: bytes) -> str:
    """What replaces a user id or an address in the audit log: `erased:` + 16 hex digits."""
    return ERASED_PREFIX + keyed_hash(value, key)[:16]


def hashed_suppressed(conn: sqlite3.Connection, channel: str, normalized_address: str, key: bytes) -> str | None:
    """The suppression reason if a forgotten user's address is on the hashed list, else None."""
    row = conn.execute(
        "SELECT reason FROM suppression_hashes WHERE channel=? AND address_hash=?",
        (channel, address_hash(channel, normalized_address, key)),
    ).fetchone()
    return None if row is None else str(row[0])


def hashed_suppressed_among(
    conn: sqlite3.Connection, channel: str, normalized_addresses: list[str], key: bytes
) -> dict[str, str]:
    """{address: reason} for those of the addresses on the hashed list (no hashing when it is empty)."""
    if conn.execute("SELECT 1 FROM suppression_hashes WHERE channel=? LIMIT 1", (channel,)).fetchone() is None:
        return {}
    by_hash = {address_hash(channel, a, key): a for a in normalized_addresses}
    found: dict[str, str] = {}
    for chunk, marks in in_chunks(list(by_hash)):
        for digest, reason in conn.execute(
            f"SELECT address_hash, reason FROM suppression_hashes WHERE channel=? AND address_hash IN ({marks})",
            [channel, *chunk],
        ):
            found[by_hash[digest]] = reason
    return found


def _normalized(channel: str, address: str) -> str:
    try:
        return normalize_address(channel, address)
    except (AddressError, ValueError):
        return address


def _user_addresses(conn: sqlite3.Connection, user_id: str) -> set[tuple[str, str]]:
    """(channel, address) of everything the user could be reached at, now or in the audit log."""
    found: set[tuple[str, str]] = set()
    user = conn.execute("SELECT email, phone, webhook_url FROM users WHERE user_id=?", (user_id,)).fetchone()
    if user is not None:
        for channel, value in (("email", user["email"]), ("sms", user["phone"]), ("webhook", user["webhook_url"])):
            if value:
                found.add((channel, value))
    for (token,) in conn.execute("SELECT token FROM devices WHERE user_id=?", (user_id,)):
        found.add(("push", token))
    endpoint = conn.execute("SELECT url FROM endpoints WHERE user_id=?", (user_id,)).fetchone()
    if endpoint is not None:
        found.add(("webhook", endpoint["url"]))
    for channel, address in conn.execute(
        "SELECT DISTINCT channel, address FROM deliveries WHERE user_id=? AND address IS NOT NULL", (user_id,)
    ):
        if not str(address).startswith(ERASED_PREFIX):
            found.add((channel, address))
    return {(channel, _normalized(channel, address)) for channel, address in found}


def _scrub(text: str | None, replacements: dict[str, str]) -> str | None:
    if not text:
        return text
    for value, label in replacements.items():
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


def forget_user(conn: sqlite3.Connection, user_id: str, key: bytes) -> dict[str, Any]:
    """Erase one user's personal data (see the module docstring); returns the counts, which hold no PII."""
    if not key:
        raise ValueError("an erasure key is required")
    known = conn.execute("SELECT 1 FROM users WHERE user_id=?", (user_id,)).fetchone()
    in_audit = conn.execute("SELECT 1 FROM deliveries WHERE user_id=? LIMIT 1", (user_id,)).fetchone()
    if known is None and in_audit is None:
        raise InputError(f"unknown user '{user_id}' (not in the directory nor in the audit log)")
    user_label = erased_label(user_id, key)
    with transaction(conn):
        addresses = _user_addresses(conn, user_id)
        replacements: dict[str, str] = {}
        for channel, address in addresses:
            replacements[address] = erased_label(f"{channel}\x1f{address}", key)
        # Unnormalised spellings seen in the audit log are replaced too.
        for channel, address in conn.execute(
            "SELECT DISTINCT channel, address FROM deliveries WHERE user_id=? AND address IS NOT NULL", (user_id,)
        ):
            replacements.setdefault(address, erased_label(f"{channel}\x1f{_normalized(channel, address)}", key))
        counts: dict[str, Any] = {"hashed_suppressions": 0}
        now = iso()
        for channel, address in sorted(addresses):
            row = conn.execute(
                "SELECT reason FROM suppressions WHERE channel=? AND address=?", (channel, address)
            ).fetchone()
            reason = str(row["reason"]) if row is not None else ERASED_REASON
            conn.execute(
                """INSERT INTO suppression_hashes (channel, address_hash, reason, created) VALUES (?, ?, ?, ?)
                   ON CONFLICT(channel, address_hash) DO NOTHING""",
                (channel, address_hash(channel, address, key), reason, now),
            )
            conn.execute("DELETE FROM suppressions WHERE channel=? AND address=?", (channel, address))
            counts["hashed_suppressions"] += 1
        for table in ("devices", "endpoints", "preferences", "inbox", "users"):
            counts[table] = conn.execute(f"DELETE FROM {table} WHERE user_id=?", (user_id,)).rowcount
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
        counts["deliveries"] = len(delivery_ids)
        counts["audit_events"] = conn.execute(
            "UPDATE audit_events SET subject=? WHERE subject=?", (user_label, user_id)
        ).rowcount
        record_event(conn, "user_forgotten", user_label, counts)
    return counts
