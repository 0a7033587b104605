"""SES for tests: moto's real server in a thread, and a scripted SESv2 endpoint for errors.

    set_fake_aws_env(monkeypatch)            # credentials and region for botocore, no ~/.aws
    with MotoSes() as ses:
        ses.verify_identity("sender@example.com")
        settings = {"endpoint_url": ses.url, "region": ses.region, "from_address": "sender@example.com"}
        ...
        [sent] = ses.sent_messages()         # what moto recorded (simple or raw)
        assert ses.send_requests == 1        # POST /v2/email/outbound-emails seen by moto

    with FakeSesApi() as api:                # moto does not throttle; this answers what SES would
        api.script(ses_error(400, "TooManyRequestsException"), ses_error(500, "InternalFailure"))
        settings = {"endpoint_url": api.url, ...}
        assert len(api.requests_to(SEND_EMAIL_PATH)) == 1

SES v2 is a rest-json API: botocore takes the error code from the `x-amzn-ErrorType` header
(the part before ':'), else from the body's `code`/`__type`.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import logging
import threading
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal, Self

import botocore.session
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from tests.fakes import Answer, AppServer, answer_json

SEND_EMAIL_PATH = "/v2/email/outbound-emails"
REGION = "us-east-1"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}
_UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2", "AWS_MAX_ATTEMPTS")


def set_fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region for botocore; nothing is read from the real ~/.aws."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in _UNSET_AWS_ENV:
        monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class SentSesMessage:
    """One message moto's SES backend recorded."""

    kind: Literal["simple", "raw"]
    message_id: str
    source: str
    destinations: tuple[str, ...]
    subject: str | None  # simple only
    body: str | None  # simple only; moto keeps the HTML part when there is one, else the text
    raw: bytes | None  # raw only

    def message(self) -> EmailMessage:
        """The raw message parsed (raw only)."""
        assert self.raw is not None, "a simple message has no raw MIME"
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _RequestCounter(logging.Handler):
    """Counts requests from werkzeug's access log, the one record moto's server keeps of each."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self.count = 0
        self._count_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        request_line = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        if f"POST {self.path} " in request_line:
            with self._count_lock:
                self.count += 1


class MotoSes:
    """moto's ThreadedMotoServer on 127.0.0.1:<ephemeral>, with helpers for its SES backend.

    `send_requests` reads werkzeug's access log (a process-wide logger), so run one MotoSes at a time.
    """

    region = REGION

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._counter = _RequestCounter(SEND_EMAIL_PATH)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def send_requests(self) -> int:
        """How many SESv2 SendEmail requests moto has handled since start() or reset()."""
        return self._counter.count

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        logger = logging.getLogger("werkzeug")
        logger.addHandler(self._counter)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # keep the access log out of test output
        self._server.start()
        self.port = int(self._server.get_host_and_port()[1])

    def stop(self) -> None:
        self._server.stop()
        logger = logging.getLogger("werkzeug")
        logger.removeHandler(self._counter)
        logger.propagate = True

    def reset(self) -> None:
        """Forget every identity and message (moto's own reset API) and the request count."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self._counter.count = 0

    def client(self) -> Any:
        """A plain (sync) botocore SESv2 client for setting up state in moto."""
        return botocore.session.get_session().create_client(
            "sesv2",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def verify_identity(self, address: str) -> None:
        """Create (moto verifies at once) the sending identity `address`."""
        self.client().create_email_identity(EmailIdentity=address)

    def data(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=10) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def sent_messages(self) -> list[SentSesMessage]:
        """Every message moto's SES backend recorded, simple ones first, then raw ones.

        In data.json the SES models live under "ses": "Message" (simple: id, source, destinations
        {ToAddresses...}, subject, body) and "RawMessage" (id, source, destinations, raw_data).
        """
        ses = self.data().get("ses", {})
        messages = [
            SentSesMessage(
                kind="simple",
                message_id=str(entry["id"]),
                source=str(entry["source"]),
                destinations=tuple(
                    address
                    for field in ("ToAddresses", "CcAddresses", "BccAddresses")
                    for address in (entry.get("destinations") or {}).get(field, [])
                ),
                subject=entry.get("subject"),
                body=entry.get("body"),
                raw=None,
            )
            for entry in ses.get("Message", [])
        ]
        messages += [
            SentSesMessage(
                kind="raw",
                message_id=str(entry["id"]),
                source=str(entry["source"]),
                # moto lists the Destination and the To header both; once each is enough here.
                destinations=tuple(dict.fromkeys(entry.get("destinations") or [])),
                subject=None,
                body=None,
                raw=str(entry["raw_data"]).encode(),
            )
            for entry in ses.get("RawMessage", [])
        ]
        return messages


def ses_error(status: int, code: str, message: str = "", *, in_header: bool = True) -> Answer:
    """An SESv2 error answer: `x-amzn-ErrorType` header (as AWS sends it) or a body `__type` only."""
    text = message or f"{code} (scripted by FakeSesApi)"
    if in_header:
        headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"}
        return answer_json(status, {"message": text}, headers)
    return answer_json(status, {"__type": code, "message": text})


class FakeSesApi(AppServer):
    """The SESv2 SendEmail endpoint with scripted answers; unscripted requests succeed."""

    thread_name = "fake-sesv2"

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.method == "POST" and request.path == SEND_EMAIL_PATH:
            return web.json_response({"MessageId": f"fake-ses-{next(self._ids)}"})
        return web.json_response(
            {"message": "not found"}, status=404, headers={"x-amzn-ErrorType": "NotFoundException"}
        )
