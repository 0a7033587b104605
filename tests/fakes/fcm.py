"""A stand-in for Firebase Cloud Messaging (HTTP v1) and the Google OAuth token endpoint it needs.

    with FakeFcm(project_id="notifyctl-test") as fcm:
        key_file = fcm.write_service_account(tmp_path / "sa.json")   # token_uri = fcm.token_uri
        settings = fcm.provider_settings(key_file)                  # credentials, project_id, base_url
        fcm.unregister("stale-token")                               # 404 UNREGISTERED from now on
        fcm.register_elsewhere("other-app")                         # 403 SENDER_ID_MISMATCH
        fcm.make_invalid("garbage")                                 # 400 INVALID_ARGUMENT on the token
        fcm.script_sends(QUOTA_EXCEEDED)                            # next messages:send only
        fcm.script_sends(process_then_stall(3))                     # created and recorded, answered late
        ...
        assert fcm.sent[0]["message"]["token"] == "device-1"
        assert len(fcm.send_requests) == 1                          # every messages:send, any answer

`POST /token` is the OAuth 2.0 JWT-bearer grant a service account uses: the form carries
`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an RS256 `assertion` whose signature
is checked with the public half of a key this fake generated (`service_account()`), along with
`iss`, `aud` (Google's token endpoint, as google-auth always sends, or this `token_uri`), `exp`,
`iat` and `scope`; the answer is
`{"access_token": ..., "expires_in": 3600, "token_type": "Bearer"}`, or 400 `invalid_grant`.

`POST /v1/projects/{project}/messages:send` needs `Authorization: Bearer <a token it issued>`
(401 UNAUTHENTICATED otherwise) and the fake's project (403 PERMISSION_DENIED otherwise). It
checks the message like FCM does: exactly one of token / fid / topic / condition, string data
values, a well-formed topic name (400 INVALID_ARGUMENT otherwise); tokens made unregistered answer
404 UNREGISTERED, tokens made invalid 400 INVALID_ARGUMENT with a `message.token` field violation,
tokens registered by another sender (another Firebase project: every token, when notifyctl's key
and project are the wrong ones) 403 SENDER_ID_MISMATCH.
Success is `{"name": "projects/{project}/messages/0:<n>%<hex>"}`. Errors are FCM v1 documents:
`{"error": {"code": 404, "message": ..., "status": "NOT_FOUND", "details": [{"@type":
"type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}`.

`script()` (from AppServer) applies to any next request, the token endpoint included;
`script_sends()` only to the next messages:send requests.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes import Answer, AppServer, RecordedRequest, answer_json

DEFAULT_PROJECT_ID = "notifyctl-test"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth puts Google's endpoint in `aud` whatever the key file's token_uri says.
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
TOKEN_LIFETIME_S = 3600
MESSAGING_SCOPES = frozenset(
    {"https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform"}
)
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

_SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
_TOPIC = re.compile(r"^[a-zA-Z0-9\-_.~%]+$")
_TARGETS = ("token", "fid", "topic", "condition")


def fcm_error_body(
    status: int, status_name: str, message: str, error_code: str | None = None, *, details: list[Any] | None = None
) -> dict[str, Any]:
    """An FCM v1 error document; `error_code` adds the FcmError detail that says which FCM error it is."""
    all_details = list(details or [])
    if error_code is not None:
        all_details.insert(0, {"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    error: dict[str, Any] = {"code": status, "message": message, "status": status_name}
    if all_details:
        error["details"] = all_details
    return {"error": error}


def fcm_error(
    status: int,
    status_name: str,
    message: str,
    error_code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """A scripted FCM error answer."""
    return answer_json(status, fcm_error_body(status, status_name, message, error_code), headers)


UNREGISTERED = fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
QUOTA_EXCEEDED = fcm_error(
    429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'.", "QUOTA_EXCEEDED"
)
UNAVAILABLE = fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
INTERNAL = fcm_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL")
SENDER_ID_MISMATCH = fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")


@dataclass(frozen=True)
class ServiceAccount:
    """A Google service account whose key this fake trusts."""

    info: dict[str, str]  # the JSON key file's content
    public_key: rsa.RSAPublicKey

    @property
    def client_email(self) -> str:
        return self.info["client_email"]


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _fcm_error_response(status: int, status_name: str, message: str, error_code: str | None = None) -> web.Response:
    return _json(status, fcm_error_body(status, status_name, message, error_code))


def _invalid_argument(message: str, field: str | None = None) -> web.Response:
    details = None
    if field is not None:
        details = [{"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": field, "description": message}]}]
    return _json(400, fcm_error_body(400, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT", details=details))


class FakeFcm(AppServer):
    """The fake FCM API plus token endpoint. `sent` holds the request JSON of every accepted message."""

    thread_name = "fake-fcm"

    def __init__(self, project_id: str = DEFAULT_PROJECT_ID) -> None:
        super().__init__()
        self.project_id = project_id
        self._state_lock = threading.Lock()
        self._accounts: dict[str, ServiceAccount] = {}
        self._access_tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self._sent: list[dict[str, Any]] = []
        self._unregistered: set[str] = set()
        self._invalid: set[str] = set()
        self._elsewhere: set[str] = set()
        self._send_script: deque[Answer] = deque()
        self._ids = itertools.count(1)
        self._account: ServiceAccount | None = None

    # -- what tests use -------------------------------------------------------------------------

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def send_path(self) -> str:
        return f"/v1/projects/{self.project_id}/messages:send"

    @property
    def send_requests(self) -> list[RecordedRequest]:
        """Every messages:send request for this project (scripted answers included)."""
        return self.requests_to(self.send_path)

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return self.requests_to("/token")

    @property
    def sent(self) -> list[dict[str, Any]]:
        with self._state_lock:
            return list(self._sent)

    def service_account(self) -> ServiceAccount:
        """This fake's service account (RSA 2048, generated once per fake), trusted by `/token`."""
        if self._account is None:
            self._account = self.trust(self.new_service_account())
        return self._account

    def new_service_account(self, client_email: str | None = None) -> ServiceAccount:
        """A fresh service account with its token_uri here; not trusted until `trust()`."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        email = client_email or f"notifyctl-{secrets.token_hex(4)}@{self.project_id}.iam.gserviceaccount.com"
        info = {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": email,
            "client_id": str(10**20 + secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }
        return ServiceAccount(info=info, public_key=key.public_key())

    def trust(self, account: ServiceAccount) -> ServiceAccount:
        with self._state_lock:
            self._accounts[account.client_email] = account
        return account

    def write_service_account(self, path: Path, account: ServiceAccount | None = None) -> Path:
        """Write a service-account key file (this fake's own account unless given) and return its path."""
        path.write_bytes(orjson.dumps((account or self.service_account()).info))
        path.chmod(0o600)
        return path

    def provider_settings(self, credentials: Path, **overrides: Any) -> dict[str, Any]:
        """Settings for notifyctl's `fcm` provider pointed at this fake."""
        return {"credentials": str(credentials), "project_id": self.project_id, "base_url": self.url, **overrides}

    def unregister(self, *tokens: str) -> None:
        """Answer messages to these tokens with 404 UNREGISTERED (the app was uninstalled)."""
        with self._state_lock:
            self._unregistered.update(tokens)

    def make_invalid(self, *tokens: str) -> None:
        """Answer messages to these tokens with 400 INVALID_ARGUMENT naming `message.token`."""
        with self._state_lock:
            self._invalid.update(tokens)

    def register_elsewhere(self, *tokens: str) -> None:
        """Answer messages to these tokens with 403 SENDER_ID_MISMATCH (another sender registered them)."""
        with self._state_lock:
            self._elsewhere.update(tokens)

    def revoke_access_tokens(self) -> None:
        """Forget every issued access token, as if they had expired (sends answer 401)."""
        with self._state_lock:
            self._access_tokens.clear()

    def script_sends(self, *answers: Answer) -> None:
        """Answer the next messages:send requests with these, in order (token requests are not affected)."""
        with self._state_lock:
            self._send_script.extend(answers)

    def fail_next_sends(self, count: int, answer: Answer) -> None:
        self.script_sends(*([answer] * count))

    def clear(self) -> None:
        """Forget requests, scripts, sent messages and token lists; issued tokens and keys stay valid."""
        super().clear()
        with self._state_lock:
            self._sent.clear()
            self._unregistered.clear()
            self._invalid.clear()
            self._elsewhere.clear()
            self._send_script.clear()

    # -- the API ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/token":
            return self._token(body)
        match = _SEND_PATH.match(request.path)
        if request.method != "POST" or match is None:
            return _fcm_error_response(404, "NOT_FOUND", f"The requested URL {request.path} was not found.")
        return await self._send(request, match["project"], body)

    def _token(self, body: bytes) -> web.Response:
        form = {key: values[-1] for key, values in parse_qs(body.decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != JWT_BEARER:
            return _json(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Invalid grant_type: {form.get('grant_type')}",
                },
            )
        problem = self._check_assertion(form.get("assertion", ""))
        if problem is not None:
            return _json(400, {"error": "invalid_grant", "error_description": problem})
        access_token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self._state_lock:
            self._access_tokens[access_token] = time.time() + TOKEN_LIFETIME_S
        return _json(200, {"access_token": access_token, "expires_in": TOKEN_LIFETIME_S, "token_type": "Bearer"})

    def _check_assertion(self, assertion: str) -> str | None:
        """Why the JWT is refused, or None when it is good."""
        pieces = assertion.split(".")
        if len(pieces) != 3:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        try:
            header = orjson.loads(_b64url_decode(pieces[0]))
            claims = orjson.loads(_b64url_decode(pieces[1]))
            signature = _b64url_decode(pieces[2])
        except (binascii.Error, ValueError):
            return "Invalid JWT: malformed."
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            return "Invalid JWT: unsupported algorithm."
        with self._state_lock:
            account = self._accounts.get(str(claims.get("iss")))
        if account is None:
            return "Invalid grant: account not found"
        try:
            account.public_key.verify(
                signature, f"{pieces[0]}.{pieces[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return "Invalid JWT Signature."
        now = time.time()
        if claims.get("aud") not in (GOOGLE_TOKEN_ENDPOINT, self.token_uri):
            return "Invalid JWT: Failed audience check."
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] < now:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        if not isinstance(claims.get("iat"), int | float) or claims["iat"] > now + 60:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        if not MESSAGING_SCOPES & set(str(claims.get("scope", "")).split()):
            return "Invalid OAuth scope or ID token audience provided."
        return None

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._state_lock:
            expiry = self._access_tokens.get(token)
        return expiry is not None and expiry > time.time()

    async def _scripted(self, request: web.Request, answer: Answer) -> web.StreamResponse:
        if answer.kind == "reset":
            return await self._reset(request)
        if answer.kind == "stall":
            await self._pause(answer.seconds)
            return web.Response(status=200)
        return web.Response(status=answer.status, body=answer.body, headers=dict(answer.headers))

    async def _send(self, request: web.Request, project: str, body: bytes) -> web.StreamResponse:
        if not self._authorized(request):
            return _fcm_error_response(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
            )
        with self._state_lock:
            scripted = self._send_script.popleft() if self._send_script else None
        if scripted is not None and scripted.kind in ("process_then_stall", "process_then_reset"):
            response = await self._send(request, project, body)  # the message is created and recorded
            if scripted.kind == "process_then_reset":
                return await self._reset(request)
            await self._pause(scripted.seconds)
            return response
        if scripted is not None:
            return await self._scripted(request, scripted)
        if project != self.project_id:
            return _fcm_error_response(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist).",
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _invalid_argument("Invalid JSON payload received.")
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, dict):
            return _invalid_argument("Invalid JSON payload received. Unknown name: message is required.")
        problem = self._check_message(message)
        if problem is not None:
            return problem
        name = f"projects/{self.project_id}/messages/0:{1_700_000_000_000_000 + next(self._ids)}%{secrets.token_hex(8)}"
        if not payload.get("validate_only"):
            with self._state_lock:
                self._sent.append({**payload, "name": name})
        return _json(200, {"name": name})

    def _check_message(self, message: dict[str, Any]) -> web.Response | None:
        targets = [target for target in _TARGETS if message.get(target)]
        if len(targets) != 1:
            return _invalid_argument("Exactly one of token, fid, topic or condition must be specified.")
        data = message.get("data", {})
        if not isinstance(data, dict):
            return _invalid_argument("Invalid value at 'message.data'.", "message.data")
        for index, (key, value) in enumerate(data.items()):
            if not isinstance(value, str):
                return _invalid_argument(
                    f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value!r}",
                    f"message.data[{index}].value",
                )
            if key.startswith(("google.", "gcm.")) or key in ("from", "message_type", "notification"):
                return _invalid_argument(f"Invalid data payload key: {key}", f"message.data[{index}].key")
        topic = message.get("topic")
        if topic is not None and not _TOPIC.match(str(topic)):
            return _invalid_argument("Invalid topic name.", "message.topic")
        device = message.get("token") or message.get("fid")
        if device is not None:
            with self._state_lock:
                unregistered = device in self._unregistered
                invalid = device in self._invalid
                elsewhere = device in self._elsewhere
            if invalid:
                return _invalid_argument(
                    "The registration token is not a valid FCM registration token", "message.token"
                )
            if unregistered:
                return _fcm_error_response(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
            if elsewhere:
                return _fcm_error_response(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        return None
