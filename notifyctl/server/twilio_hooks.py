"""Twilio webhooks: incoming SMS (STOP / START / HELP) and message status callbacks.

Every request must carry a valid `X-Twilio-Signature`, checked with the twilio package's
RequestValidator against the public URL (the server sits behind a proxy, so the URL Twilio
signed is `settings.public_url` + path, tried with and without the port). A bad signature is
refused with 403 and recorded in the audit log, without the signature itself.

Keywords are matched on the whole message, case and punctuation ignored, as Twilio does. An
opt-out is committed before the answer, and policy re-checks suppressions right before every
provider call, so it stops the very next SMS to that number, even inside a running broadcast.
"""

from __future__ import annotations

import os
import re
import sqlite3

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.messaging_response import MessagingResponse

from notifyctl.addresses import AddressError, normalize_phone
from notifyctl.app.optouts import opting_out
from notifyctl.cli.output import mask_address
from notifyctl.server.accesslog import note
from notifyctl.server.responses import json_error, route_name
from notifyctl.server.state import state_of
from notifyctl.settings import Settings
from notifyctl.store import directory
from notifyctl.store.db import record_event, transaction
from notifyctl.store.inbound import first_time, receipt_targets, set_receipt

routes = web.RouteTableDef()

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})
STOP_SOURCE = "sms_stop"  # the preference rows an opt-out writes, so that an opt-in can undo exactly those

# Later states win; a late "sent" callback never overwrites "delivered".
STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "receiving": 3,
    "received": 4,
    "delivered": 5,
    "read": 6,
    "undelivered": 5,
    "failed": 5,
    "canceled": 5,
}


def keyword(body: str) -> str | None:
    """'stop' / 'start' / 'help' for a message that is exactly one such keyword, else None."""
    word = re.sub(r"[\W_]+", "", body, flags=re.UNICODE).upper()
    if word in OPT_OUT:
        return "stop"
    if word in OPT_IN:
        return "start"
    if word in HELP:
        return "help"
    return None


def auth_tokens(settings: Settings) -> list[str]:
    """Auth tokens of every configured Twilio account, and TWILIO_AUTH_TOKEN."""
    tokens = [
        str(conf.options.get("auth_token") or "") for conf in settings.providers.values() if conf.type == "twilio"
    ]
    tokens.append(os.environ.get("TWILIO_AUTH_TOKEN", ""))
    return [t for t in dict.fromkeys(tokens) if t]


def twiml(message: str | None = None) -> web.Response:
    response = MessagingResponse()
    if message:
        response.message(message)
    return web.Response(text=str(response), content_type="application/xml")


async def verified_form(request: web.Request) -> MultiDict[str] | web.Response:
    """The form Twilio posted, or the 403/503 answer for a request that is not provably Twilio's."""
    state = state_of(request)
    tokens = auth_tokens(state.ctx.settings)
    if not tokens:
        return json_error(
            503, "no Twilio auth token is configured (providers.<twilio>.auth_token or TWILIO_AUTH_TOKEN)"
        )
    posted = await request.post()  # 413 above the body limit
    form: MultiDict[str] = MultiDict((k, v) for k, v in posted.items() if isinstance(v, str))
    signature = request.headers.get("X-Twilio-Signature", "")
    url = state.ctx.settings.public_base_url + request.raw_path
    algorithm = get_signature_algorithm(request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    if signature and any(RequestValidator(token).validate(url, form, signature, algorithm) for token in tokens):
        return form
    with transaction(state.ctx.conn):
        record_event(
            state.ctx.conn,
            "webhook_signature_rejected",
            None,
            {
                "source": "twilio",
                "route": route_name(request),
                "remote": request.remote or "",
                "signature_present": bool(signature),
            },
        )
    note(request, outcome="bad_signature")
    return json_error(403, "invalid Twilio signature")


def opt_out(conn: sqlite3.Connection, settings: Settings, phone: str, sid: str, word: str) -> list[str]:
    """Suppress the number on SMS and turn SMS off for every user with it, before the number's next
    message on any backend; returns those users."""
    users = directory.users_with_phone(conn, phone)
    with opting_out(conn, settings):
        directory.add_suppression(conn, "sms", phone, "stop", source=f"twilio:{sid}")
        for user_id in users:
            directory.set_preference(conn, user_id, "sms", "*", False, source=STOP_SOURCE)
        record_event(
            conn,
            "sms_opt_out",
            None,
            {"message_sid": sid, "keyword": word, "address": mask_address(phone), "users": users},
        )
    return users


def opt_in(conn: sqlite3.Connection, phone: str, sid: str, word: str) -> list[str]:
    """Undo an SMS opt-out: lift a `stop` suppression (never one an operator or a provider added for
    another reason) and drop the preference rows the opt-out wrote, so earlier choices apply again."""
    users = directory.users_with_phone(conn, phone)
    with transaction(conn):
        lifted = directory.is_suppressed(conn, "sms", phone) == "stop" and directory.remove_suppression(
            conn, "sms", phone
        )
        cleared = 0
        for user_id in users:
            cleared += directory.remove_sms_preference(conn, user_id, source=STOP_SOURCE)
        record_event(
            conn,
            "sms_opt_in",
            None,
            {
                "message_sid": sid,
                "keyword": word,
                "address": mask_address(phone),
                "users": users,
                "suppression_lifted": bool(lifted),
                "preferences_cleared": cleared,
            },
        )
    return users


@routes.post("/hooks/twilio/inbound")
async def inbound(request: web.Request) -> web.Response:
    form = await verified_form(request)
    if isinstance(form, web.Response):
        return form
    state = state_of(request)
    conn = state.ctx.conn
    sid = str(form.get("MessageSid") or form.get("SmsSid") or "")
    word = keyword(str(form.get("Body") or ""))
    try:
        phone: str | None = normalize_phone(str(form.get("From") or ""))
    except AddressError:
        phone = None  # short codes and alphanumeric senders cannot opt out of anything here
    note(request, message_sid=sid, keyword=word or "", address=mask_address(phone))
    with transaction(conn):
        fresh = first_time(conn, sid, "twilio_sms") if sid else True
        if fresh and phone and word == "stop":
            opt_out(conn, state_of(request).ctx.settings, phone, sid, str(form.get("Body") or "").strip()[:20])
        elif fresh and phone and word == "start":
            opt_in(conn, phone, sid, str(form.get("Body") or "").strip()[:20])
    if not fresh:
        note(request, outcome="duplicate")
    if word == "help":
        return twiml(state.options.sms_help_text)
    return twiml()


@routes.post("/hooks/twilio/status")
async def status(request: web.Request) -> web.Response:
    form = await verified_form(request)
    if isinstance(form, web.Response):
        return form
    conn = state_of(request).ctx.conn
    sid = str(form.get("MessageSid") or form.get("SmsSid") or "")
    new_status = str(form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    code = str(form.get("ErrorCode") or "") or None
    if not sid or not new_status:
        return json_error(400, "MessageSid and MessageStatus are required")
    note(request, message_sid=sid, state=new_status)
    receipt = f"{new_status}:{code}" if code else new_status
    with opting_out(conn, state_of(request).ctx.settings):  # a 21610 receipt is an opt-out
        rows = receipt_targets(conn, "sms", sid)
        for row in rows:
            current = (row["receipt_status"] or "").split(":", 1)[0]
            if current and STATUS_RANK.get(current, -1) > STATUS_RANK.get(new_status, -1):
                continue
            set_receipt(conn, row["id"], receipt)
            record_event(
                conn,
                "delivery_receipt",
                str(row["id"]),
                {"provider": "twilio", "message_sid": sid, "status": new_status, "error_code": code},
            )
            if code == "21610" and row["address"]:
                # The carrier says the recipient replied STOP: never text them again.
                directory.add_suppression(conn, "sms", row["address"], "stop", source="twilio:21610")
    note(request, count=str(len(rows)))
    return twiml()
