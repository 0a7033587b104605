"""A stand-in for Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.

    with FakeTwilio() as twilio:
        settings = twilio.provider_settings()      # account_sid, auth_token, from_number, base_url
        twilio.opt_out("+15005550009")             # 400 / code 21610 from now on
        twilio.make_invalid("+15005550001")        # 400 / code 21211 from now on
        twilio.script(twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "3"}))  # next request
        ...
        assert twilio.sent[0]["To"] == "+15551234567"
        assert len(twilio.message_requests) == 1   # every POST to the Messages endpoint, any answer

It speaks the wire format the twilio package expects: a form-encoded body (`To`, `From` and/or
`MessagingServiceSid`, `Body`, `StatusCallback`), HTTP Basic auth `AccountSid:AuthToken` (401 /
code 20003 otherwise, also when the path's AccountSid is another one), 201 with a message
resource (`sid` = "SM" + 32 hex digits, `status` "queued", or "accepted" through a Messaging
Service) and errors shaped exactly like Twilio's:
`{"code": 21211, "message": "...", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}`.

Validation, in Twilio's order: To missing 21604, From and MessagingServiceSid both missing 21603,
bad MessagingServiceSid 21701 (not MG + 32 hex), Body missing 21602, Body over 1600 characters
21617, To not E.164 or made invalid 21211, To opted out 21610.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from tests.fakes import Answer, AppServer, RecordedRequest, answer_json

DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "fedcba9876543210" * 2
DEFAULT_FROM_NUMBER = "+15005550006"
MAX_BODY_CHARS = 1600

_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-f]{32}$")


def twilio_error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's error document."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def twilio_error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    """A scripted Twilio error answer."""
    return answer_json(status, twilio_error_body(status, code, message), headers)


RATE_LIMITED = twilio_error(429, 20429, "Too Many Requests")
SERVER_ERROR = twilio_error(500, 20500, "An internal server error has occurred")
UNAVAILABLE = twilio_error(503, 20503, "Service is unavailable. Please try again")


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json(status, twilio_error_body(status, code, message))


def _segments(body: str) -> int:
    """GSM-7 segments as Twilio counts them (153 characters each once the message is split)."""
    return 1 if len(body) <= 160 else -(-len(body) // 153)


class FakeTwilio(AppServer):
    """The fake API. `sent` holds the form of every message it accepted, plus the `Sid` it gave."""

    thread_name = "fake-twilio"

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        from_number: str = DEFAULT_FROM_NUMBER,
    ) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self._state_lock = threading.Lock()
        self._sent: list[dict[str, str]] = []
        self._opted_out: set[str] = set()
        self._invalid: set[str] = set()

    # -- what tests use -------------------------------------------------------------------------

    @property
    def messages_path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Every request to this account's Messages endpoint (scripted answers included)."""
        return self.requests_to(self.messages_path)

    @property
    def sent(self) -> list[dict[str, str]]:
        with self._state_lock:
            return list(self._sent)

    def provider_settings(self, **overrides: Any) -> dict[str, Any]:
        """Settings for notifyctl's `twilio` provider pointed at this fake."""
        return {
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "from_number": self.from_number,
            "base_url": self.url,
            **overrides,
        }

    def opt_out(self, *numbers: str) -> None:
        """Answer messages to these numbers with 21610 (the recipient replied STOP)."""
        with self._state_lock:
            self._opted_out.update(numbers)

    def make_invalid(self, *numbers: str) -> None:
        """Answer messages to these numbers with 21211 (not a valid phone number)."""
        with self._state_lock:
            self._invalid.update(numbers)

    def clear(self) -> None:
        super().clear()
        with self._state_lock:
            self._sent.clear()
            self._opted_out.clear()
            self._invalid.clear()

    # -- the API ----------------------------------------------------------------------------------

    def _authorized(self, request: web.Request, path_sid: str) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.account_sid == path_sid and password == self.auth_token

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        match = _MESSAGES_PATH.match(request.path)
        if match is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        if not self._authorized(request, match["sid"]):
            return _json(
                401,
                {
                    **twilio_error_body(401, 20003, "Authenticate"),
                    "detail": "Your AccountSid or AuthToken was incorrect.",
                },
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        if request.method != "POST":
            return _error(405, 20004, "Method not allowed")
        form = {key: values[-1] for key, values in parse_qs(body.decode(), keep_blank_values=True).items()}
        return self._create(form)

    def _create(self, form: dict[str, str]) -> web.Response:
        to = form.get("To", "")
        sender = form.get("From", "")
        service_sid = form.get("MessagingServiceSid", "")
        text = form.get("Body", "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service_sid:
            return _error(400, 21603, "A 'From' phone number is required.")
        if service_sid and not _MESSAGING_SERVICE_SID.match(service_sid):
            return _error(400, 21701, f"The Messaging Service Sid {service_sid} is invalid.")
        if not text:
            return _error(400, 21602, "Message body is required.")
        if len(text) > MAX_BODY_CHARS:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        with self._state_lock:
            invalid = to in self._invalid or not _E164.match(to)
            opted_out = to in self._opted_out
        if invalid:
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if opted_out:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = "SM" + uuid.uuid4().hex
        with self._state_lock:
            self._sent.append({**form, "Sid": sid})
        return _json(201, self._resource(sid, form))

    def _resource(self, sid: str, form: dict[str, str]) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        text = form["Body"]
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": text,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "num_media": "0",
            "num_segments": str(_segments(text)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Through a Messaging Service Twilio first picks a sender: the message is "accepted".
            "status": "queued" if form.get("From") else "accepted",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": form["To"],
            "uri": uri,
        }
