"""`notifyctl users forget`: forget a user's personal data, but never contact them again.

The user's directory entry, devices, webhook endpoint, preferences and in-app inbox are deleted;
what the audit log says about them (user id and addresses in deliveries, attempts and dead
letters; user id in audit events) is replaced with keyed labels, so the audit keeps its counts
and its shape without naming anyone; and every address they had, their user id included (the
address of in-app messages), stays suppressed as a keyed hash (notifyctl/store/erasure.py). All in
one transaction, audited.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from notifyctl.addresses import AddressError, normalize_address
from notifyctl.errors import NotFound
from notifyctl.security.erasure import erased_label
from notifyctl.store import erasure
from notifyctl.store.db import iso, record_event, transaction


def _normalized(channel: str, address: str) -> str:
    try:
        return normalize_address(channel, address)
    except (AddressError, ValueError):
        return address


def forget_user(conn: sqlite3.Connection, user_id: str, key: bytes) -> dict[str, Any]:
    """Erase one user's personal data (see the module docstring); returns the counts, which hold no PII."""
    if not key:
        raise ValueError("an erasure key is required")
    if not erasure.user_known(conn, user_id):
        raise NotFound(f"unknown user '{user_id}' (not in the directory nor in the audit log)")
    user_label = erased_label(user_id, key)
    with transaction(conn):
        addresses = {
            (channel, _normalized(channel, address)) for channel, address in erasure.user_addresses(conn, user_id)
        }
        replacements: dict[str, str] = {}
        for channel, address in addresses:
            replacements[address] = erased_label(f"{channel}\x1f{address}", key)
        # Unnormalised spellings seen in the audit log are replaced too.
        for channel, address in erasure.audit_addresses(conn, user_id):
            replacements.setdefault(address, erased_label(f"{channel}\x1f{_normalized(channel, address)}", key))
        counts: dict[str, Any] = {"hashed_suppressions": 0}
        now = iso()
        for channel, address in sorted(addresses):
            erasure.hash_suppression(conn, channel, address, key, now)
            counts["hashed_suppressions"] += 1
        counts.update(erasure.delete_personal_rows(conn, user_id))
        counts["deliveries"] = erasure.erase_from_audit(conn, user_id, user_label, replacements, now)
        counts["audit_events"] = erasure.relabel_audit_events(conn, user_id, user_label)
        record_event(conn, "user_forgotten", user_label, counts)
    return counts
