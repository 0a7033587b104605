"""`POST /hooks/ses`: SES bounce, complaint and delivery notifications, as SNS delivers them.

Each message's SNS signature is verified (notifyctl.server.sns) before anything is read from
it; the SNS MessageId deduplicates retries. A subscription confirmation is confirmed by GETting
its SubscribeURL (trusted hosts only). Permanent bounces and complaints put the address on the
email suppression list; every notification updates the receipt status of the deliveries whose
provider message id is the SES message id.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from notifyctl.addresses import AddressError
from notifyctl.app.optouts import opting_out
from notifyctl.cli.output import mask_address
from notifyctl.server.accesslog import note
from notifyctl.server.responses import json_error, route_name
from notifyctl.server.sns import SnsError, url_allowed, verify_message
from notifyctl.server.state import ServerState, state_of
from notifyctl.settings import Settings
from notifyctl.store import directory
from notifyctl.store.db import record_event, transaction
from notifyctl.store.inbound import first_time, receipt_targets, set_receipt

log = logging.getLogger("notifyctl.server")
routes = web.RouteTableDef()

# A later event never downgrades an earlier, stronger one (a delayed "delivered" after a bounce).
RECEIPT_RANK = {
    "delivered": 1,
    "delivery_delayed": 0,
    "bounced:transient": 2,
    "bounced:permanent": 3,
    "complained": 3,
    "rejected": 3,
}


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _recipients(entries: Any) -> list[str]:
    if not isinstance(entries, list):
        return []
    return [str(e["emailAddress"]) for e in entries if isinstance(e, dict) and isinstance(e.get("emailAddress"), str)]


def ses_outcome(event: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
    """(receipt status, [(address, suppression reason)]) for an SES notification or event."""
    kind = str(event.get("notificationType") or event.get("eventType") or "")
    if kind == "Bounce":
        bounce = _object(event, "bounce")
        permanent = bounce.get("bounceType") == "Permanent"
        receipt = "bounced:permanent" if permanent else "bounced:transient"
        return receipt, [(a, "bounce") for a in _recipients(bounce.get("bouncedRecipients"))] if permanent else []
    if kind == "Complaint":
        complaint = _object(event, "complaint")
        return "complained", [(a, "complaint") for a in _recipients(complaint.get("complainedRecipients"))]
    if kind == "Delivery":
        return "delivered", []
    if kind == "DeliveryDelay":
        return "delivery_delayed", []
    if kind == "Reject":
        return "rejected", []
    return None, []


def apply_ses_event(
    conn: sqlite3.Connection, settings: Settings, event: dict[str, Any], sns_message_id: str
) -> dict[str, int]:
    receipt, suppress = ses_outcome(event)
    mail = _object(event, "mail")
    ses_message_id = str(mail.get("messageId") or "")
    suppressed = updated = 0
    with opting_out(conn, settings):  # a bounce or complaint holds before the next message anywhere
        for address, reason in suppress:
            try:
                directory.add_suppression(
                    conn, "email", address, reason, source=f"ses:{ses_message_id or sns_message_id}"
                )
            except AddressError:
                log.warning("SES named an invalid address", extra={"address": mask_address(address)})
                continue
            suppressed += 1
        if receipt and ses_message_id:
            for row in receipt_targets(conn, "email", ses_message_id):
                if RECEIPT_RANK.get(row["receipt_status"] or "", -1) > RECEIPT_RANK.get(receipt, -1):
                    continue
                set_receipt(conn, row["id"], receipt)
                record_event(
                    conn,
                    "delivery_receipt",
                    str(row["id"]),
                    {"provider": "ses", "status": receipt, "sns_message_id": sns_message_id},
                )
                updated += 1
    return {"suppressed": suppressed, "updated": updated}


async def confirm_subscription(state: ServerState, message: dict[str, Any]) -> web.Response:
    url = str(message["SubscribeURL"])
    if not url_allowed(url, state.options.sns_subscribe_hosts, state.options.sns_allow_http):
        return json_error(403, "SubscribeURL is not a trusted SNS location")
    assert state.http is not None
    try:
        async with state.http.get(
            url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=state.options.sns_timeout_s)
        ) as resp:
            status = resp.status
            await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return json_error(503, f"could not confirm the subscription: {type(exc).__name__}")
    if status != 200:
        return json_error(503, f"could not confirm the subscription (HTTP {status})")
    with transaction(state.ctx.conn):
        record_event(state.ctx.conn, "sns_subscription_confirmed", str(message["TopicArn"]), {})
    return web.json_response({"confirmed": True})


@routes.post("/hooks/ses")
async def ses_hook(request: web.Request) -> web.Response:
    state = state_of(request)
    conn = state.ctx.conn
    try:
        message = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return json_error(400, "body is not an SNS message (JSON)")
    if not isinstance(message, dict):
        return json_error(400, "body is not an SNS message (JSON object)")
    assert state.http is not None
    try:
        await verify_message(
            message,
            state.http,
            state.sns_certificates,
            cert_hosts=state.options.sns_cert_hosts,
            allow_http=state.options.sns_allow_http,
            timeout_s=state.options.sns_timeout_s,
        )
    except SnsError as exc:
        with transaction(conn):
            record_event(
                conn,
                "webhook_signature_rejected",
                None,
                {"source": "sns", "route": route_name(request), "reason": str(exc), "remote": request.remote or ""},
            )
        note(request, outcome="bad_signature")
        return json_error(403, f"SNS message refused: {exc}")
    topics = state.options.sns_topic_arns
    if topics and message["TopicArn"] not in topics:
        return json_error(403, "SNS topic is not configured")
    note(request, message_sid=str(message["MessageId"]), keyword=str(message["Type"]))
    if message["Type"] == "SubscriptionConfirmation":
        return await confirm_subscription(state, message)
    if message["Type"] == "UnsubscribeConfirmation":
        with transaction(conn):
            record_event(conn, "sns_unsubscribed", str(message["TopicArn"]), {})
        return web.json_response({"ok": True})
    try:
        event = orjson.loads(str(message["Message"]))
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        return json_error(422, "the SNS Message is not an SES notification")
    with transaction(conn):
        if not first_time(conn, f"sns:{message['MessageId']}", "sns"):
            note(request, outcome="duplicate")
            return web.json_response({"duplicate": True})
        result = apply_ses_event(conn, state.ctx.settings, event, str(message["MessageId"]))
    return web.json_response(result)
