"""A stand-in for Apple's APNs provider API: HTTP/2 over TLS on 127.0.0.1, with the h2 library.

    with FakeApns() as apns:
        key_file, ca_file = apns.write_key(tmp_path / "AuthKey.p8"), apns.write_ca(tmp_path / "ca.pem")
        settings = apns.provider_settings(key_file, ca_file)   # type, key_file, key_id, team_id, topic, host, ca_file
        apns.unregister(token)                                  # 410 Unregistered from now on
        apns.wrong_environment = True                           # 400 BadDeviceToken for every token
        apns.expire_tokens()                                    # tokens signed so far: 403 ExpiredProviderToken
        apns.script(ApnsAnswer(429, "TooManyRequests"))         # the next request only
        assert apns.sent[0].token == token

The server's certificate is signed by a CA made here (`write_ca`), for `ca_file`. Each request is
checked as APNs checks it: `POST /3/device/<64 hex digits>` (400 BadDeviceToken otherwise),
`authorization: bearer <JWT>` verified with the public half of this fake's P-256 key (ES256, `kid`
= key id, `iss` = team id; 403 MissingProviderToken / InvalidProviderToken, and
ExpiredProviderToken for an `iat` over an hour old or a token expired by `expire_tokens` /
`expire_next_token`), `apns-topic` (400
MissingTopic / DeviceTokenNotForTopic), `apns-push-type` (400 InvalidPushType), `apns-priority`
(400 BadPriority; background pushes only 5), `apns-expiration` (400 BadExpirationDate), `apns-id`
in UUID form (400 BadMessageId), `apns-collapse-id` of 64 bytes at most (400 BadCollapseId), and
the JSON payload with an `aps` dictionary, 4096 bytes at most (413 PayloadTooLarge, 400
PayloadEmpty / BadPayload). Errors are Apple's bodies: `{"reason": "BadDeviceToken"}`, with a
`timestamp` for 410. Success is 200 with `apns-id` (the request's) and no body.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOPIC = "com.example.notifyctl"
TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
MAX_PAYLOAD = 4096
_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_PUSH_TYPES = frozenset({"alert", "background", "voip", "complication", "fileprovider", "mdm", "location"})


@dataclass(frozen=True)
class ApnsAnswer:
    """A scripted answer: a status and Apple's reason (None: 200), or a stall of `seconds` (no answer)."""

    status: int = 200
    reason: str | None = None
    stall_s: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ApnsRequest:
    """One request the fake saw, and what it answered (`status` 0: none)."""

    token: str
    headers: dict[str, str]
    payload: bytes
    status: int
    reason: str | None

    def json(self) -> Any:
        return orjson.loads(self.payload)


def _cert_pair() -> tuple[bytes, bytes, bytes]:
    """(CA certificate PEM, server certificate PEM, server key PEM) for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notifyctl test APNs CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), leaf.public_bytes(pem), key_pem


class FakeApns:
    """The fake APNs server (see the module docstring); `requests` holds every request, `sent` the accepted."""

    def __init__(self, topic: str = TOPIC, team_id: str = TEAM_ID, key_id: str = KEY_ID) -> None:
        self.topic, self.team_id, self.key_id = topic, team_id, key_id
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._ca_pem, self._cert_pem, self._cert_key_pem = _cert_pair()
        self.port = 0
        self.wrong_environment = False
        self._lock = threading.Lock()
        self._requests: list[ApnsRequest] = []
        self._unregistered: set[str] = set()
        self._script: deque[ApnsAnswer] = deque()
        self._tokens_seen: set[str] = set()
        self._expired: set[str] = set()  # provider tokens answered 403 ExpiredProviderToken
        self._expire_next = False
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()

    # -- what tests use -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[ApnsRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def sent(self) -> list[ApnsRequest]:
        return [request for request in self.requests if request.status == 200]

    def write_key(self, path: Path) -> Path:
        """This fake's signing key as Apple hands it out: a PKCS#8 PEM `.p8` file."""
        path.write_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return path

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self._ca_pem)
        return path

    def provider_settings(self, key_file: Path, ca_file: Path) -> dict[str, Any]:
        return {
            "type": "apns",
            "key_file": str(key_file),
            "key_id": self.key_id,
            "team_id": self.team_id,
            "topic": self.topic,
            "host": self.url,
            "ca_file": str(ca_file),
        }

    def unregister(self, token: str) -> None:
        with self._lock:
            self._unregistered.add(token)

    def expire_tokens(self) -> None:
        """Every provider token seen until now answers 403 ExpiredProviderToken from now on."""
        with self._lock:
            self._expired |= self._tokens_seen

    def expire_next_token(self) -> None:
        """The next provider token not seen before is expired as soon as it is seen (403 ExpiredProviderToken)."""
        with self._lock:
            self._expire_next = True

    def script(self, *answers: ApnsAnswer) -> None:
        with self._lock:
            self._script.extend(answers)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._unregistered.clear()
            self._script.clear()
            self._tokens_seen.clear()
            self._expired.clear()
            self._expire_next = False
            self.wrong_environment = False

    # -- judging a request ------------------------------------------------------------------------

    def _auth_error(self, authorization: str | None) -> tuple[int, str] | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return 403, "MissingProviderToken"
        token = authorization[len("bearer ") :]
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token, self._key.public_key(), algorithms=["ES256"], options={"require": ["iat", "iss"]}, leeway=60
            )
        except jwt.PyJWTError:
            return 403, "InvalidProviderToken"
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return 403, "InvalidProviderToken"
        with self._lock:
            if self._expire_next and token not in self._tokens_seen:
                self._expire_next = False
                self._expired.add(token)
            self._tokens_seen.add(token)
            expired = token in self._expired
        if expired or time.time() - int(claims["iat"]) > 3600:
            return 403, "ExpiredProviderToken"
        return None

    def _judge(self, path: str, method: str, headers: dict[str, str], payload: bytes) -> tuple[int, str | None]:
        if method != "POST":
            return 405, "MethodNotAllowed"
        if not path.startswith("/3/device/"):
            return 404, "BadPath"
        token = path[len("/3/device/") :]
        if not _TOKEN.fullmatch(token):
            return 400, "BadDeviceToken"
        if (auth := self._auth_error(headers.get("authorization"))) is not None:
            return auth
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic"
        if topic != self.topic:
            return 400, "DeviceTokenNotForTopic"
        push_type = headers.get("apns-push-type", "")
        if push_type not in _PUSH_TYPES:
            return 400, "InvalidPushType"
        priority = headers.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority != "5"):
            return 400, "BadPriority"
        if not headers.get("apns-expiration", "0").isdigit():
            return 400, "BadExpirationDate"
        if "apns-id" in headers and not _UUID.fullmatch(headers["apns-id"]):
            return 400, "BadMessageId"
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId"
        if len(payload) > MAX_PAYLOAD:
            return 413, "PayloadTooLarge"
        if not payload:
            return 400, "PayloadEmpty"
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return 400, "BadPayload"
        if not isinstance(document, dict) or not isinstance(document.get("aps"), dict):
            return 400, "BadPayload"
        with self._lock:
            if self.wrong_environment:
                return 400, "BadDeviceToken"
            if token in self._unregistered:
                return 410, "Unregistered"
        return 200, None

    def _answer(self, path: str, method: str, headers: dict[str, str], payload: bytes) -> tuple[ApnsAnswer, str]:
        token = path.rsplit("/", 1)[-1]
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            answer = scripted
        else:
            status, reason = self._judge(path, method, headers, payload)
            answer = ApnsAnswer(status, reason)
        with self._lock:
            self._requests.append(
                ApnsRequest(token, headers, payload, 0 if answer.stall_s else answer.status, answer.reason)
            )
        return answer, token

    # -- the HTTP/2 server --------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        tasks: set[asyncio.Task[None]] = set()
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = ({str(k): str(v) for k, v in event.headers}, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        task = asyncio.create_task(self._respond(conn, writer, event.stream_id, headers, bytes(body)))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        break
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def _respond(
        self,
        conn: h2.connection.H2Connection,
        writer: asyncio.StreamWriter,
        stream_id: int,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        path, method = headers.get(":path", ""), headers.get(":method", "")
        answer, _token = self._answer(path, method, headers, body)
        if answer.stall_s:
            await asyncio.sleep(answer.stall_s)
            return
        response = [(":status", str(answer.status))]
        if "apns-id" in headers:
            response.append(("apns-id", headers["apns-id"]))
        response.extend(answer.headers)
        if answer.reason is None:
            conn.send_headers(stream_id, response, end_stream=True)
        else:
            document: dict[str, Any] = {"reason": answer.reason}
            if answer.status == 410:
                document["timestamp"] = int(time.time() * 1000)
            content = orjson.dumps(document)
            response += [("content-type", "application/json"), ("content-length", str(len(content)))]
            conn.send_headers(stream_id, response)
            conn.send_data(stream_id, content, end_stream=True)
        try:
            writer.write(conn.data_to_send())
            await writer.drain()
        except ConnectionError:
            pass

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as folder:
            cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
            cert.write_bytes(self._cert_pem)
            key.write_bytes(self._cert_key_pem)
            context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
        return context

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="fake-apns", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake APNs did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=self._ssl_context())
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.close()
