"""Outbound webhooks, signed per the Standard Webhooks specification.

Each POST carries `webhook-id` (the delivery's stable message id, so receivers can dedupe a
re-send), a fresh `webhook-timestamp` and a `webhook-signature` per signing secret. Endpoint URLs
come from customers, so every request goes through the SSRF guard: HTTPS only, hosts resolved
once and refused when any address is not public, redirects never followed. The allowlist
setting `allow_hosts` is the only way around that (tests, private deployments).

The requests go through `http1.Http1Pool`, a lean keep-alive HTTP/1.1 client, rather than
aiohttp's session: its module docstring says why and what it keeps.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import orjson
from yarl import URL

from notifyctl.errors import OutcomeUnknown, PermanentError, ProviderError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult, trusted
from notifyctl.providers.base import Capabilities, ProviderContext, endpoint_of
from notifyctl.providers.transports.http1 import Http1Pool, NoAnswer, Target
from notifyctl.security.signing import signature_header
from notifyctl.security.ssrf import SsrfRefused, is_allowed_host

MAX_RETRY_AFTER_S = 3600.0
USER_AGENT = "notifyctl-webhooks/0.1"


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, cap_s: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), capped; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap_s)


def response_outcome(provider: str, envelope: Envelope, status: int, headers: Mapping[str, str]) -> SendResult:
    """The result of an HTTP answer, or the provider error it means."""
    if 200 <= status < 300:
        return trusted(SendResult, provider=provider, provider_message_id=envelope.message_id, status_code=status)
    code = str(status)
    if 300 <= status < 400:
        raise PermanentError(f"HTTP {status}: redirects are not followed", code=code)
    retry_after_s = parse_retry_after(headers.get("Retry-After"))
    # Whatever an endpoint answers is about that endpoint: its backpressure holds back its deliveries only.
    endpoint = endpoint_of(envelope.address)
    if status == 429:
        message = f"HTTP {status}: endpoint is rate limiting"
        raise RateLimited(message, retry_after_s=retry_after_s, code=code, endpoint=endpoint)
    if status == 408:
        raise TransientError(
            f"HTTP {status}: request timeout", retry_after_s=retry_after_s, code=code, endpoint=endpoint
        )
    if status == 410:
        raise PermanentError(f"HTTP {status}: endpoint is gone", code=code, disable_endpoint=True)
    if 400 <= status < 500:
        raise PermanentError(f"HTTP {status}: rejected by the endpoint", code=code)
    if 500 <= status < 600:
        raise TransientError(
            f"HTTP {status}: endpoint error", retry_after_s=retry_after_s, code=code, endpoint=endpoint
        )
    raise PermanentError(f"HTTP {status}: unexpected status", code=code)


@contextmanager
def _mapped_errors(endpoint: str) -> Iterator[None]:
    """The one place where connection, TLS and timeout exceptions become provider errors.

    Not sent (the request was never written): the guard's refusal, a failed connection or TLS
    handshake, the deadline passing while connecting. Unknown (`NoAnswer`: written, then no usable
    answer): the endpoint may have processed it, so it is OutcomeUnknown, never "not sent". Each is
    that `endpoint`'s trouble, not the provider's: it trips no circuit breaker (retried with backoff).
    """
    try:
        yield
    except ProviderError:
        raise
    except NoAnswer as exc:
        raise OutcomeUnknown(f"webhook: {exc}", code=exc.code, endpoint=endpoint) from exc
    except TimeoutError as exc:
        message = "webhook endpoint: no connection before the timeout"
        raise TransientError(message, code="connect_timeout", endpoint=endpoint) from exc
    except SsrfRefused as exc:
        raise PermanentError(str(exc), code="ssrf") from exc
    except ssl.SSLError as exc:
        raise TransientError(f"TLS failure: {exc}", code="tls", endpoint=endpoint) from exc
    except OSError as exc:
        message = f"webhook request failed: {type(exc).__name__}: {exc}"
        raise TransientError(message, code="connection", endpoint=endpoint) from exc


class WebhookProvider:
    """POSTs the JSON body of a webhook envelope to the endpoint URL in `envelope.address`."""

    capabilities = Capabilities(channels=("webhook",), idempotent=True, per_endpoint=True)

    def __init__(self, context: ProviderContext) -> None:
        settings = context.settings
        self.name = context.name
        self.allow_hosts: tuple[str, ...] = tuple(str(host) for host in settings.get("allow_hosts", ()))
        self.timeout_s = float(settings.get("timeout_s", 10))
        self.connections = int(settings.get("connections", settings.get("concurrency", 64)))
        # A private CA to trust instead of the system store (tests, private deployments).
        self.ca_file: str | None = str(settings["ca_file"]) if settings.get("ca_file") else None
        self._pool: Http1Pool | None = None
        self._tls: dict[tuple[str, str] | None, ssl.SSLContext] = {}
        self._checked: dict[str, Target] = {}

    async def open(self) -> None:
        # No proxy from the environment (it would resolve hosts behind the guard's back) and no
        # cookies (one endpoint's cookie must never travel to another on the same host): the pool
        # has neither.
        self._pool = Http1Pool(self.connections, self.timeout_s, self.allow_hosts)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def send(self, envelope: Envelope) -> SendResult:
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"provider {self.name} used before open()")
        target = self._checked_url(envelope.address)
        body = _json_body(envelope)
        headers = _signed_headers(envelope, body, int(time.time()))
        tls = self._tls_context(envelope.client_cert) if target.https else None
        with _mapped_errors(endpoint_of(envelope.address)):
            # The body of the answer is not waited for: the status is the answer, and an endpoint
            # that stalls or floods its response body must not turn an accepted delivery into a failure.
            status, retry_after = await pool.post(target, tls, headers, body)
        response_headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return response_outcome(self.name, envelope, status, response_headers)

    def _tls_context(self, client_cert: str | None) -> ssl.SSLContext | None:
        """The TLS context for an endpoint: the trusted CAs, plus its client certificate (mutual TLS).

        `client_cert` is "CERT_PATH\nKEY_PATH" (PEM files). One context per pair, built once: loading
        a certificate chain reads and parses files, too slow per message.
        """
        pair: tuple[str, str] | None = None
        if client_cert:
            cert, _, key = client_cert.partition("\n")
            if not cert or not key:
                raise PermanentError(
                    "client certificate setting must name a certificate and a key file", code="client_cert"
                )
            pair = (cert, key)
        elif self.ca_file is None:
            return None
        cached = self._tls.get(pair)
        if cached is not None:
            return cached
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if pair is not None:
                context.load_cert_chain(pair[0], pair[1])
        except (ssl.SSLError, OSError) as exc:
            # The message names the files, not their contents.
            raise PermanentError(f"cannot load TLS files: {exc}", code="client_cert") from exc
        self._tls[pair] = context
        return context

    def _checked_url(self, address: str) -> Target:
        """The endpoint if its URL is usable and the HTTPS rule allows it, else PermanentError. The
        answer depends only on the address and the provider's allowlist: kept per address. Where it
        may connect is the pool's to check, at every new connection (ssrf.resolve_checked)."""
        target = self._checked.get(address)
        if target is None:
            target = self._check_url(address)
            if len(self._checked) >= 65536:
                self._checked.clear()
            self._checked[address] = target
        return target

    def _check_url(self, address: str) -> Target:
        try:
            url = URL(address)
            host = url.raw_host
            if not url.is_absolute() or not host or url.scheme not in ("https", "http"):
                raise PermanentError("webhook URL must be an absolute https:// URL", code="bad_url")
            if url.scheme != "https" and not is_allowed_host(host, self.allow_hosts):
                raise PermanentError("webhook URL must use https://", code="bad_url")
            return Target.of(url, USER_AGENT)
        except (ValueError, TypeError) as exc:  # also UnicodeEncodeError
            raise PermanentError(f"invalid webhook URL: {exc}", code="bad_url") from exc


def _json_body(envelope: Envelope) -> bytes:
    if "body" not in envelope.parts:
        raise PermanentError("webhook envelope has no 'body' part", code="missing_part")
    try:
        return orjson.dumps(envelope.parts["body"])
    except TypeError as exc:
        raise PermanentError(f"webhook body is not JSON-serializable: {exc}", code="bad_part") from exc


def _signed_headers(envelope: Envelope, body: bytes, timestamp: int) -> bytes:
    msg_id = envelope.message_id
    if not msg_id or not msg_id.isascii() or not msg_id.isprintable() or " " in msg_id or "." in msg_id:
        # The id is part of the signed string "{id}.{timestamp}.{body}"; a '.' would make it ambiguous.
        # Printable ASCII without spaces: no whitespace or control character can reach the header.
        raise PermanentError(f"unusable webhook-id {msg_id!r}", code="bad_message_id")
    if not envelope.signing_secrets:
        raise PermanentError("no signing secret for this webhook endpoint", code="no_secret")
    try:
        signature = signature_header(envelope.signing_secrets, msg_id, timestamp, body)
    except ValueError as exc:
        raise PermanentError(f"invalid webhook signing secret: {exc}", code="bad_secret") from exc
    # Header lines as sent: the id was checked above (ASCII, no whitespace), the signature is base64.
    return (
        f"Content-Type: application/json\r\nwebhook-id: {msg_id}\r\n"
        f"webhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\n"
    ).encode("ascii")
