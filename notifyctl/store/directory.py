"""The user directory: users, devices, webhook endpoints, preferences and suppressions."""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from notifyctl.addresses import AddressError, normalize_address, push_address, split_push_address
from notifyctl.models import User, trusted
from notifyctl.store.db import dumps, in_chunks, iso, loads, record_event, transaction

SUPPRESSION_REASONS = ("manual", "unsubscribe", "bounce", "complaint", "stop")


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


# What `upsert_users` writes, shared with `users_import`, which copies staged users with the same
# statements. A re-import keeps an existing webhook secret unless the file gives a new one: one
# statement per case rather than an UPDATE per user (a million users in seconds, not minutes).
USERS_COLUMNS = "user_id, email, phone, locale, timezone, webhook_url, attributes, created, updated"
USERS_ON_CONFLICT = """ON CONFLICT(user_id) DO UPDATE SET email=excluded.email, phone=excluded.phone,
    locale=excluded.locale, timezone=excluded.timezone, webhook_url=excluded.webhook_url,
    attributes=excluded.attributes, updated=excluded.updated"""
ENDPOINT_NEW_SECRET_ON_CONFLICT = "ON CONFLICT(user_id) DO UPDATE SET url=excluded.url"
# A token registered again is seen again (`last_seen`); `devices prune` drops those not seen for months.
# A token's push service (`apns`, `fcm`) is in `service`; the rest of notifyctl sees push addresses
# (`apns:<token>` for APNs, the bare token for FCM: addresses.push_address), made and split here.
DEVICES_COLUMNS = "user_id, token, platform, created, last_seen, service"
DEVICES_ON_CONFLICT = "ON CONFLICT(user_id, token) DO UPDATE SET last_seen=excluded.last_seen, service=excluded.service"
ENDPOINT_GIVEN_SECRET_ON_CONFLICT = "ON CONFLICT(user_id) DO UPDATE SET url=excluded.url, secret=excluded.secret"


def upsert_users(conn: sqlite3.Connection, users: Iterable[User]) -> int:
    """Insert or update users with their devices and endpoints; one transaction per call."""
    users = list(users)
    now = iso()
    user_rows: list[tuple[Any, ...]] = []
    device_rows: list[tuple[Any, ...]] = []
    given_secret_rows: list[tuple[Any, ...]] = []
    new_secret_rows: list[tuple[Any, ...]] = []
    for user in users:
        user_rows.append(
            (
                user.user_id,
                user.email,
                user.phone,
                user.locale,
                user.timezone,
                user.webhook_url,
                dumps(user.attributes),
                now,
                now,
            )
        )
        for address in user.push_tokens:
            service, token = split_push_address(address)
            device_rows.append((user.user_id, token, None, now, now, service))
        if user.webhook_url and user.webhook_secret:
            given_secret_rows.append((user.user_id, user.webhook_url, user.webhook_secret))
        elif user.webhook_url:
            new_secret_rows.append((user.user_id, user.webhook_url, new_webhook_secret()))
    with transaction(conn):
        conn.executemany(
            f"INSERT INTO users ({USERS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) {USERS_ON_CONFLICT}", user_rows
        )
        conn.executemany(
            f"INSERT INTO devices ({DEVICES_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) {DEVICES_ON_CONFLICT}", device_rows
        )
        conn.executemany(
            f"INSERT INTO endpoints (user_id, url, secret) VALUES (?, ?, ?) {ENDPOINT_NEW_SECRET_ON_CONFLICT}",
            new_secret_rows,
        )
        conn.executemany(
            f"INSERT INTO endpoints (user_id, url, secret) VALUES (?, ?, ?) {ENDPOINT_GIVEN_SECRET_ON_CONFLICT}",
            given_secret_rows,
        )
    return len(user_rows)


def _push_tokens(conn: sqlite3.Connection, chunk: Sequence[str], marks: str) -> dict[str, list[str]]:
    """The push addresses of a chunk of users (`marks`: its placeholders), in device order."""
    tokens: dict[str, list[str]] = {}
    for user_id, token, service in conn.execute(
        f"SELECT user_id, token, service FROM devices WHERE user_id IN ({marks}) ORDER BY created, token", chunk
    ):
        tokens.setdefault(user_id, []).append(push_address(token, service))
    return tokens


def _users_from_rows(conn: sqlite3.Connection, rows: list[sqlite3.Row], contacts: bool = True) -> dict[str, User]:
    """Users with their devices and endpoints, in three queries whatever the number of users
    (one without `contacts`: no push tokens, no webhook endpoint)."""
    ids = [row["user_id"] for row in rows]
    tokens: dict[str, list[str]] = {}
    endpoints: dict[str, sqlite3.Row] = {}
    for chunk, marks in in_chunks(ids if contacts else []):
        tokens.update(_push_tokens(conn, chunk, marks))
        for row in conn.execute(f"SELECT * FROM endpoints WHERE user_id IN ({marks})", chunk):
            endpoints[row["user_id"]] = row
    users: dict[str, User] = {}
    for row in rows:
        endpoint = endpoints.get(row["user_id"])
        active = endpoint is not None and endpoint["disabled_at"] is None
        # trusted: every field comes from our own tables, validated when it was written.
        users[row["user_id"]] = trusted(
            User,
            user_id=row["user_id"],
            email=row["email"],
            phone=row["phone"],
            locale=row["locale"],
            timezone=row["timezone"],
            push_tokens=tokens.get(row["user_id"], []),
            webhook_url=endpoint["url"] if endpoint is not None and active else None,
            webhook_secret=endpoint["secret"] if endpoint is not None and active else None,
            attributes=loads(row["attributes"]) or {},
        )
    return users


def get_user(conn: sqlite3.Connection, user_id: str) -> User | None:
    return get_users(conn, [user_id]).get(user_id)


def get_users(conn: sqlite3.Connection, user_ids: Sequence[str], *, contacts: bool = True) -> dict[str, User]:
    """Several users at once (for planning in batches). `contacts=False` leaves out push tokens and
    the webhook endpoint, for callers that have the address already (the engine's feeder: it is in
    the delivery row)."""
    rows: list[sqlite3.Row] = []
    unique = list(dict.fromkeys(user_ids))
    for chunk, marks in in_chunks(unique):
        rows.extend(conn.execute(f"SELECT * FROM users WHERE user_id IN ({marks})", chunk))
    return _users_from_rows(conn, rows, contacts)


class Contact(NamedTuple):
    """What planning reads of a user: where to reach them, their locale and time zone. No attributes
    (rendering reads those) and no secrets."""

    user_id: str
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    webhook_url: str | None  # the endpoint's, while it is not disabled (as `get_users`)
    push_tokens: list[str]


def get_contacts(conn: sqlite3.Connection, user_ids: Sequence[str], *, push_tokens: bool) -> dict[str, Contact]:
    """The contacts of several users, as `get_users` has them, in one joined query per chunk (plus
    one for the push tokens when `push_tokens`): for the planner, which reads a user per recipient
    and should leave the GIL to the senders as much as it can."""
    contacts: dict[str, Contact] = {}
    for chunk, marks in in_chunks(list(dict.fromkeys(user_ids))):
        tokens = _push_tokens(conn, chunk, marks) if push_tokens else {}
        for user_id, email, phone, locale, timezone, url in conn.execute(
            "SELECT u.user_id, u.email, u.phone, u.locale, u.timezone, "
            "CASE WHEN e.disabled_at IS NULL THEN e.url END "
            f"FROM users AS u LEFT JOIN endpoints AS e ON e.user_id = u.user_id WHERE u.user_id IN ({marks})",
            chunk,
        ):
            contacts[user_id] = Contact(user_id, email, phone, locale, timezone, url, tokens.get(user_id, []))
    return contacts


def users_with_phone(conn: sqlite3.Connection, phone: str) -> list[str]:
    """The ids of the users whose phone is `phone` (normalised), in order."""
    return [row[0] for row in conn.execute("SELECT user_id FROM users WHERE phone=? ORDER BY user_id", (phone,))]


def user_attribute_keys(conn: sqlite3.Connection) -> set[str]:
    """Every attribute name present in the directory (for checking templates before a send)."""
    keys: set[str] = set()
    for (key,) in conn.execute("SELECT DISTINCT j.key FROM users, json_each(users.attributes) AS j"):
        keys.add(key)
    return keys


def endpoint(conn: sqlite3.Connection, user_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM endpoints WHERE user_id=?", (user_id,)).fetchone()
    return row


def has_device(conn: sqlite3.Connection, user_id: str, token: str) -> bool:
    """Whether the user has this token (given bare or as a push address)."""
    _, token = split_push_address(token)
    return conn.execute("SELECT 1 FROM devices WHERE user_id=? AND token=?", (user_id, token)).fetchone() is not None


def register_device(
    conn: sqlite3.Connection, user_id: str, token: str, platform: str | None, source: str, service: str = "fcm"
) -> bool:
    """True when the token is new for this user (a re-registration updates the platform, the push
    service and when it was last seen). A token given as a push address (`apns:…`, `fcm:…`) is
    stored bare, with its service, as has_device and remove_device read it."""
    if token.startswith(("apns:", "fcm:")):
        service, token = split_push_address(token)
    now = iso()
    with transaction(conn):
        if has_device(conn, user_id, token):
            conn.execute(
                "UPDATE devices SET platform=COALESCE(?, platform), service=?, last_seen=? WHERE user_id=? AND token=?",
                (platform, service, now, user_id, token),
            )
            return False
        conn.execute(
            f"INSERT INTO devices ({DEVICES_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (user_id, token, platform, now, now, service),
        )
        record_event(conn, "device_registered", user_id, {"platform": platform, "service": service, "source": source})
    return True


def remove_device(conn: sqlite3.Connection, user_id: str | None, address: str, reason: str) -> None:
    """Drop a push token, given as a push address (`apns:<token>`) or as the bare token."""
    _, token = split_push_address(address)
    with transaction(conn):
        conn.execute("DELETE FROM devices WHERE token=? AND (user_id=? OR ? IS NULL)", (token, user_id, user_id))
        record_event(conn, "device_removed", user_id, {"reason": reason})


def stale_devices(conn: sqlite3.Connection, seen_before: str) -> int:
    """How many push tokens were last registered before `seen_before` (ISO); in a database not
    migrated yet (`doctor` reads it as it is), first stored before then."""
    try:
        row = conn.execute("SELECT count(*) FROM devices WHERE last_seen < ?", (seen_before,)).fetchone()
    except sqlite3.OperationalError:  # no last_seen column before 0007_device_last_seen
        row = conn.execute("SELECT count(*) FROM devices WHERE created < ?", (seen_before,)).fetchone()
    return int(row[0])


def prune_devices(conn: sqlite3.Connection, seen_before: str, *, source: str) -> int:
    """Remove the push tokens last registered before `seen_before` (ISO), audited; returns how many."""
    with transaction(conn):
        removed = conn.execute("DELETE FROM devices WHERE last_seen < ?", (seen_before,)).rowcount
        record_event(conn, "devices_pruned", None, {"removed": removed, "seen_before": seen_before, "source": source})
    return int(removed)


def disable_endpoint(conn: sqlite3.Connection, user_id: str, reason: str) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE endpoints SET disabled_at=?, disabled_reason=? WHERE user_id=? AND disabled_at IS NULL",
            (iso(), reason, user_id),
        )
        record_event(conn, "endpoint_disabled", user_id, {"reason": reason})


# --- preferences -------------------------------------------------------------------------------


def set_preference(
    conn: sqlite3.Connection, user_id: str, channel: str, category: str, enabled: bool, source: str = "cli"
) -> None:
    with transaction(conn):
        conn.execute(
            """INSERT INTO preferences VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(user_id, channel, category) DO UPDATE SET enabled=excluded.enabled,
                 source=excluded.source, updated=excluded.updated""",
            (user_id, channel, category, int(enabled), source, iso()),
        )
        record_event(
            conn,
            "preference_set",
            user_id,
            {"channel": channel, "category": category, "enabled": enabled, "source": source},
        )


def preference(conn: sqlite3.Connection, user_id: str, channel: str, category: str) -> bool | None:
    """True (explicit opt-in), False (opted out) or None (never said); '*' category is a wildcard."""
    # Two primary-key lookups in one statement; ORDER BY would build a temporary B-tree per call.
    row = conn.execute(
        """SELECT COALESCE(
             (SELECT enabled FROM preferences WHERE user_id=?1 AND channel=?2 AND category=?3),
             (SELECT enabled FROM preferences WHERE user_id=?1 AND channel=?2 AND category='*'))""",
        (user_id, channel, category),
    ).fetchone()
    row = None if row is None or row[0] is None else row
    return None if row is None else bool(row[0])


def remove_sms_preference(conn: sqlite3.Connection, user_id: str, *, source: str) -> int:
    """Drop the user's all-categories SMS preference if `source` wrote it (an SMS opt-in undoing its
    opt-out); returns the rows removed."""
    return conn.execute(
        "DELETE FROM preferences WHERE user_id=? AND channel='sms' AND category='*' AND source=?", (user_id, source)
    ).rowcount


def preferences(conn: sqlite3.Connection, user_id: str) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            "SELECT channel, category, enabled, source, updated FROM preferences WHERE user_id=? "
            "ORDER BY channel, category",
            (user_id,),
        )
    ]


# --- suppressions ------------------------------------------------------------------------------


def add_suppression(conn: sqlite3.Connection, channel: str, address: str, reason: str, source: str = "cli") -> str:
    """Suppress an address on a channel; returns the normalised address."""
    if reason not in SUPPRESSION_REASONS:
        raise ValueError(f"unknown reason '{reason}' (known: {', '.join(SUPPRESSION_REASONS)})")
    normalized = normalize_address(channel, address)
    with transaction(conn):
        conn.execute(
            """INSERT INTO suppressions VALUES (?, ?, ?, ?, ?)
               ON CONFLICT(channel, address) DO UPDATE SET reason=excluded.reason, source=excluded.source""",
            (channel, normalized, reason, source, iso()),
        )
        record_event(conn, "suppression_added", None, {"channel": channel, "reason": reason, "source": source})
    return normalized


def suppress_as_seen(conn: sqlite3.Connection, channel: str, address: str, reason: str, source: str) -> None:
    """Suppress an address a provider rejected (an opted-out number, a hard bounce), inside the
    caller's transaction; one the directory would not accept today is kept exactly as the provider
    saw it."""
    try:
        normalized = normalize_address(channel, address)
    except AddressError:
        normalized = address
    conn.execute(
        """INSERT INTO suppressions VALUES (?, ?, ?, ?, ?)
           ON CONFLICT(channel, address) DO UPDATE SET reason=excluded.reason, source=excluded.source""",
        (channel, normalized, reason, source, iso()),
    )
    record_event(conn, "suppression_added", None, {"channel": channel, "reason": reason, "source": source})


def remove_suppression(conn: sqlite3.Connection, channel: str, address: str) -> bool:
    normalized = normalize_address(channel, address)
    with transaction(conn):
        cur = conn.execute("DELETE FROM suppressions WHERE channel=? AND address=?", (channel, normalized))
        if cur.rowcount:
            record_event(conn, "suppression_removed", None, {"channel": channel})
    return cur.rowcount > 0


def is_suppressed(conn: sqlite3.Connection, channel: str, address: str) -> str | None:
    """The suppression reason, or None. `address` must already be normalised."""
    row = conn.execute("SELECT reason FROM suppressions WHERE channel=? AND address=?", (channel, address)).fetchone()
    return None if row is None else str(row[0])


def directory_version(conn: sqlite3.Connection) -> int:
    """A counter that every change to suppressions, hashed suppressions or preferences bumps (triggers)."""
    return int(conn.execute("SELECT n FROM directory_version").fetchone()[0])


def suppressed_among(conn: sqlite3.Connection, channel: str, addresses: Sequence[str]) -> dict[str, str]:
    """{address: reason} for those of `addresses` (normalised) suppressed on the channel."""
    found: dict[str, str] = {}
    for chunk, marks in in_chunks(list(dict.fromkeys(addresses))):
        for address, reason in conn.execute(
            f"SELECT address, reason FROM suppressions WHERE channel=? AND address IN ({marks})", [channel, *chunk]
        ):
            found[address] = reason
    return found


def preferences_among(conn: sqlite3.Connection, user_ids: Sequence[str], channel: str) -> dict[tuple[str, str], bool]:
    """{(user_id, category): enabled} on one channel for several users ('*' rows included)."""
    found: dict[tuple[str, str], bool] = {}
    for chunk, marks in in_chunks(list(dict.fromkeys(user_ids))):
        for user_id, category, enabled in conn.execute(
            f"SELECT user_id, category, enabled FROM preferences WHERE channel=? AND user_id IN ({marks})",
            [channel, *chunk],
        ):
            found[(user_id, category)] = bool(enabled)
    return found


def suppressions(conn: sqlite3.Connection, channel: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT channel, address, reason, source, created FROM suppressions"
    params: tuple[Any, ...] = ()
    if channel:
        sql += " WHERE channel=?"
        params = (channel,)
    return [dict(r) for r in conn.execute(sql + " ORDER BY created", params)]
