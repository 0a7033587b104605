"""Webhook endpoints: secret rotation, client certificates, and disabling endpoints that keep failing.

Rotation keeps the previous secret valid for a grace period: the envelope builder signs with both
while `previous_secret_until` is in the future (notifyctl.pipeline.envelope.signing_secrets), so
receivers can switch to the new secret whenever they like within that period.

An endpoint that answers 410 is disabled at once (the engine applies PermanentError.disable_endpoint).
One that fails transiently without a single success for `disable_after_s` is disabled too:
`record_failure` starts the clock at the first failure, `record_success` stops it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from notifyctl.errors import InputError, NotFound
from notifyctl.store.db import in_chunks, iso, parse_iso, record_event, transaction
from notifyctl.store.directory import new_webhook_secret

FAILING_REASON = "failing"


def _require(conn: sqlite3.Connection, user_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute("SELECT * FROM endpoints WHERE user_id=?", (user_id,)).fetchone()
    if row is None:
        raise NotFound(f"user '{user_id}' has no webhook endpoint")
    return row


def rotate_secret(conn: sqlite3.Connection, user_id: str, grace_hours: float, now: datetime | None = None) -> str:
    """A new signing secret for the endpoint; the current one stays valid for `grace_hours`."""
    if grace_hours < 0:
        raise InputError("--grace-hours must be 0 or more")
    with transaction(conn):
        row = _require(conn, user_id)
        secret = new_webhook_secret()
        until = (now or datetime.now().astimezone()) + timedelta(hours=grace_hours)
        conn.execute(
            "UPDATE endpoints SET secret=?, previous_secret=?, previous_secret_until=? WHERE user_id=?",
            (secret, row["secret"] if grace_hours > 0 else None, iso(until) if grace_hours > 0 else None, user_id),
        )
        record_event(conn, "endpoint_secret_rotated", user_id, {"grace_hours": grace_hours})
    return secret


def show(conn: sqlite3.Connection, user_id: str, now: datetime | None = None) -> dict[str, Any]:
    """The endpoint's settings with its secrets hidden (only whether they exist and until when)."""
    row = _require(conn, user_id)
    previous_valid = bool(
        row["previous_secret"]
        and row["previous_secret_until"]
        and parse_iso(row["previous_secret_until"]) > (now or datetime.now().astimezone())
    )
    return {
        "user_id": row["user_id"],
        "url": row["url"],
        "secret": "whsec_…(hidden)" if row["secret"] else None,
        "previous_secret": "whsec_…(hidden)" if previous_valid else None,
        "previous_secret_until": row["previous_secret_until"] if previous_valid else None,
        "client_cert": row["client_cert"],
        "client_key": "(set)" if row["client_key"] else None,
        "disabled_at": row["disabled_at"],
        "disabled_reason": row["disabled_reason"],
        "failing_since": row["failing_since"],
    }


def enable(conn: sqlite3.Connection, user_id: str) -> bool:
    """Re-enable a disabled endpoint; False when it was not disabled."""
    with transaction(conn):
        row = _require(conn, user_id)
        if row["disabled_at"] is None:
            return False
        conn.execute(
            "UPDATE endpoints SET disabled_at=NULL, disabled_reason=NULL, failing_since=NULL WHERE user_id=?",
            (user_id,),
        )
        record_event(conn, "endpoint_enabled", user_id, {"was": row["disabled_reason"]})
    return True


def set_client_cert(conn: sqlite3.Connection, user_id: str, cert: Path | None, key: Path | None) -> None:
    """Present this certificate and key (PEM files) to the endpoint; both None removes them."""
    if (cert is None) != (key is None):
        raise InputError("give both --cert and --key (or neither, to remove the client certificate)")
    paths: list[str | None] = [None, None]
    if cert is not None and key is not None:
        for index, path in enumerate((cert, key)):
            if not path.is_file():
                raise InputError(f"not a file: {path}")
            paths[index] = str(path.resolve())
        _check_pair(cert, key)
    with transaction(conn):
        _require(conn, user_id)
        conn.execute("UPDATE endpoints SET client_cert=?, client_key=? WHERE user_id=?", (*paths, user_id))
        record_event(conn, "endpoint_client_cert_set", user_id, {"set": cert is not None})


def _check_pair(cert: Path, key: Path) -> None:
    """Refuse a certificate and key that do not load together, now rather than at send time."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise InputError(f"the client certificate and key do not load together: {exc}") from exc


def client_cert(conn: sqlite3.Connection, user_id: str | None) -> str | None:
    """The envelope's `client_cert` for this endpoint: "CERT_PATH\\nKEY_PATH", or None."""
    if not user_id:
        return None
    row = conn.execute("SELECT client_cert, client_key FROM endpoints WHERE user_id=?", (user_id,)).fetchone()
    if row is None or not row["client_cert"] or not row["client_key"]:
        return None
    return f"{row['client_cert']}\n{row['client_key']}"


def record_failure(conn: sqlite3.Connection, user_id: str, now: datetime, disable_after_s: float) -> bool:
    """Note a transient failure; True when the endpoint has now been failing long enough and got disabled."""
    with transaction(conn):
        row = conn.execute("SELECT failing_since, disabled_at FROM endpoints WHERE user_id=?", (user_id,)).fetchone()
        if row is None or row["disabled_at"] is not None:
            return False
        if row["failing_since"] is None:
            conn.execute("UPDATE endpoints SET failing_since=? WHERE user_id=?", (iso(now), user_id))
            return False
        failing_s = (now - parse_iso(row["failing_since"])).total_seconds()
        if failing_s < disable_after_s:
            return False
        conn.execute(
            "UPDATE endpoints SET disabled_at=?, disabled_reason=? WHERE user_id=?", (iso(now), FAILING_REASON, user_id)
        )
        record_event(conn, "endpoint_disabled", user_id, {"reason": FAILING_REASON, "failing_s": round(failing_s)})
    return True


def record_success(conn: sqlite3.Connection, user_id: str) -> None:
    """The endpoint answered 2xx: its failure clock starts again at the next failure."""
    record_successes(conn, [user_id])


def record_successes(conn: sqlite3.Connection, user_ids: list[str]) -> None:
    """`record_success` for several endpoints at once."""
    conn.executemany(
        "UPDATE endpoints SET failing_since=NULL WHERE user_id=? AND failing_since IS NOT NULL",
        [(user_id,) for user_id in sorted(set(user_ids))],
    )


def credentials(
    conn: sqlite3.Connection, user_ids: list[str], now: datetime
) -> dict[str, tuple[list[str], str | None]]:
    """{user_id: (signing secrets, "cert\\nkey" for mutual TLS or None)} in one query per 500 users."""
    found: dict[str, tuple[list[str], str | None]] = {}
    for chunk, marks in in_chunks(user_ids):
        for row in conn.execute(
            "SELECT user_id, secret, previous_secret, previous_secret_until, client_cert, client_key FROM endpoints "
            f"WHERE user_id IN ({marks})",
            chunk,
        ):
            secrets = [row["secret"]]
            until = row["previous_secret_until"]
            if row["previous_secret"] and until and parse_iso(until) > now:
                secrets.append(row["previous_secret"])
            cert = f"{row['client_cert']}\n{row['client_key']}" if row["client_cert"] and row["client_key"] else None
            found[row["user_id"]] = (secrets, cert)
    return found
