"""One-click unsubscribe (RFC 8058) at `/u/{token}`.

`GET` only shows a confirmation page with a button: link scanners and prefetchers follow GETs,
so a GET never unsubscribes. `POST` with `List-Unsubscribe=One-Click` (what mail clients send,
and what the page's form sends) unsubscribes: no cookie, no login, no redirect, idempotent.
The token is signed (notifyctl.security.unsubscribe), so it names exactly one recipient, channel and
category and cannot be forged or altered. A directory user gets the preference turned off for
that category on that channel; an inline contact (no user record) has no preferences, so the
address is suppressed on that channel instead.
"""

from __future__ import annotations

import html
import sqlite3

from aiohttp import web

from notifyctl.addresses import AddressError, normalize_address
from notifyctl.app.context import Context
from notifyctl.app.optouts import opting_out
from notifyctl.cli.output import mask_address
from notifyctl.security.unsubscribe import read_token
from notifyctl.server.accesslog import note
from notifyctl.server.state import state_of
from notifyctl.settings import Settings
from notifyctl.store import directory

routes = web.RouteTableDef()

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
_CONTACT_PREFIXES = ("email:", "phone:", "sms:")


def page(status: int, title: str, body_html: str) -> web.Response:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}"
        "button{font-size:1rem;padding:.6rem 1.2rem}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )
    return web.Response(status=status, text=document, content_type="text/html", headers=HEADERS)


def _what(channel: str, category: str) -> str:
    kind = "all" if category == "*" else f"&ldquo;{html.escape(category)}&rdquo;"
    return f"{kind} {html.escape(channel)} messages"


def invalid_link() -> web.Response:
    return page(
        404,
        "Link not valid",
        "<p>This unsubscribe link is not valid. Please use the link from the message you received.</p>",
    )


def unsubscribe(conn: sqlite3.Connection, settings: Settings, who: str, channel: str, category: str) -> str | None:
    """Apply an unsubscribe, before the next message on any backend; returns what was done
    ('preference', 'suppression', 'already'), or None when the token names neither a user nor a
    usable address."""
    with opting_out(conn, settings):
        return _unsubscribe(conn, who, channel, category)


def _unsubscribe(conn: sqlite3.Connection, who: str, channel: str, category: str) -> str | None:
    if directory.get_user(conn, who) is not None:
        if directory.preference(conn, who, channel, category) is False:
            return "already"
        directory.set_preference(conn, who, channel, category, False, source="unsubscribe")
        return "preference"
    address = who
    for prefix in _CONTACT_PREFIXES:
        if address.startswith(prefix):
            address = address[len(prefix) :]
    try:
        normalized = normalize_address(channel, address)
    except AddressError:
        return None
    if not normalized or directory.is_suppressed(conn, channel, normalized) is not None:
        return "already" if normalized else None
    directory.add_suppression(conn, channel, normalized, "unsubscribe", source="one-click")
    return "suppression"


def read_link(ctx: Context, token: str) -> tuple[str, str, str] | None:
    """The token's (who, channel, category) if it is signed with the installation's secret, or with
    one it replaced less than `unsubscribe_grace_days` ago (links already sent keep working)."""
    return read_token(ctx.secret.link_secrets(ctx.clock(), ctx.settings.unsubscribe_grace_days), token)


@routes.get("/u/{token}")
async def confirm_page(request: web.Request) -> web.Response:
    fields = read_link(state_of(request).ctx, request.match_info["token"])
    if fields is None:
        note(request, outcome="bad_token")
        return invalid_link()
    _, channel, category = fields
    return page(
        200,
        "Unsubscribe",
        f"<p>Stop receiving {_what(channel, category)}?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@routes.post("/u/{token}")
async def one_click(request: web.Request) -> web.Response:
    state = state_of(request)
    fields = read_link(state.ctx, request.match_info["token"])
    if fields is None:
        note(request, outcome="bad_token")
        return invalid_link()
    form = await request.post()
    if form.get("List-Unsubscribe") != "One-Click":
        return page(400, "Unsubscribe", "<p>Expected the form field List-Unsubscribe=One-Click.</p>")
    who, channel, category = fields
    done = unsubscribe(state.ctx.conn, state.ctx.settings, who, channel, category)
    note(request, outcome=done or "unknown_recipient", address=mask_address(who))
    if done is None:
        return invalid_link()
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"unsubscribed": True, "channel": channel, "category": category}, headers=HEADERS)
    return page(200, "Unsubscribed", f"<p>You will no longer receive {_what(channel, category)}.</p>")
