"""A stand-in for the Postmark HTTP API: `POST /email` and `POST /email/batch`.

    with FakePostmark(token="pm-test-token") as postmark:
        settings = {"base_url": postmark.url, "server_token": postmark.token, "from_address": ...}
        postmark.make_inactive("gone@example.org")      # 422 ErrorCode 406 from now on
        postmark.script(postmark_error(429, 429, "slow down", {"Retry-After": "3"}))  # next request
        ...
        assert postmark.sent[0]["To"] == "a@example.org"

It checks `X-Postmark-Server-Token` (401, ErrorCode 10 when wrong), validates From and To
(422, ErrorCode 300), answers inactive recipients with 422 / ErrorCode 406 and otherwise
{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}. The batch endpoint answers
200 with one such entry per message, as Postmark does.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

import orjson
from aiohttp import web
from email_validator import EmailNotValidError, validate_email

from tests.fakes import Answer, AppServer, answer_json

DEFAULT_TOKEN = "pm-test-token"
BATCH_LIMIT = 500


def postmark_error(status: int, error_code: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    """A scripted Postmark error answer: `{"ErrorCode": ..., "Message": ...}` with `status`."""
    return answer_json(status, {"ErrorCode": error_code, "Message": message}, headers)


def _valid_address(value: Any) -> bool:
    """One address, bare or with a display name, that email-validator accepts."""
    if not isinstance(value, str) or "," in value:
        return False
    _, address = parseaddr(value)
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


class FakePostmark(AppServer):
    """The fake API. `sent` holds every message it accepted (request JSON plus its MessageID)."""

    thread_name = "fake-postmark"

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        super().__init__()
        self.token = token
        self._state_lock = threading.Lock()
        self._sent: list[dict[str, Any]] = []
        self._inactive: set[str] = set()
        self._ids = itertools.count(1)

    @property
    def sent(self) -> list[dict[str, Any]]:
        with self._state_lock:
            return list(self._sent)

    def make_inactive(self, *addresses: str) -> None:
        """Answer messages to these recipients with ErrorCode 406 (inactive recipient)."""
        with self._state_lock:
            self._inactive.update(address.lower() for address in addresses)

    def clear(self) -> None:
        super().clear()
        with self._state_lock:
            self._sent.clear()
            self._inactive.clear()

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.method != "POST" or request.path not in ("/email", "/email/batch"):
            return web.json_response({"ErrorCode": 404, "Message": "Not found"}, status=404)
        if request.headers.get("X-Postmark-Server-Token") != self.token:
            return _json(401, {"ErrorCode": 10, "Message": "The Server Token you provided in the request was invalid."})
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _json(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."})
        if request.path == "/email":
            if not isinstance(payload, dict):
                return _json(422, {"ErrorCode": 402, "Message": "Expected a JSON object."})
            answer = self._accept(payload)
            return _json(200 if answer["ErrorCode"] == 0 else 422, answer)
        if not isinstance(payload, list) or len(payload) > BATCH_LIMIT:
            return _json(422, {"ErrorCode": 300, "Message": f"Expected a JSON array of at most {BATCH_LIMIT}."})
        answers = [
            self._accept(message) if isinstance(message, dict) else _invalid("not an object") for message in payload
        ]
        return _json(200, answers)

    def _accept(self, message: dict[str, Any]) -> dict[str, Any]:
        if not _valid_address(message.get("From")):
            return _invalid("Invalid 'From' address.")
        to = message.get("To")
        if not _valid_address(to):
            return _invalid("Invalid 'To' address.")
        assert isinstance(to, str)
        with self._state_lock:
            if to.lower() in self._inactive:
                return {
                    "ErrorCode": 406,
                    "Message": "You tried to send to recipient(s) that have been marked as inactive.",
                    "To": to,
                }
            message_id = str(uuid.UUID(int=next(self._ids)))
            self._sent.append({**message, "MessageID": message_id})
        return {
            "To": to,
            "SubmittedAt": datetime.now(UTC).isoformat(),
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        }


def _invalid(reason: str) -> dict[str, Any]:
    return {"ErrorCode": 300, "Message": f"Invalid email request: {reason}"}


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
