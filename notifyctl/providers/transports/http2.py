"""One HTTP/2 connection to one host, carrying many concurrent streams (APNs), through httpx with h2.

    api = Http2Api("https://api.push.apple.com", label="apns", timeout_s=10, ca_file=None)
    await api.open()
    answer = await api.post("/3/device/<token>", body_bytes, headers={...})
    answer.status, answer.headers, answer.body   # body: the parsed JSON, or None
    await api.close()

httpx over aioapns: aioapns takes `use_sandbox` but no host, so it cannot be pointed at a local
server without patching it; httpx's AsyncClient(http2=True) takes any base URL, a CA file for TLS
verification, and multiplexes every concurrent request as a stream of one connection (one
connection is what Apple asks for; `connections` allows a few more for very high rates).

No retries, no redirects, no proxies or certificates from the environment. What never became an
answer is mapped here, in one place: not sent before the request was written (TransientError
`connect_timeout`, `connection`, `pool_timeout`), unknown after (OutcomeUnknown
`timeout_after_send`, `reset_after_send`).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from notifyctl.errors import OutcomeUnknown, ProviderError, TransientError
from notifyctl.providers.transports.json_api import JsonAnswer


def provider_error(exc: httpx.HTTPError, label: str) -> ProviderError:
    """What an httpx exception means for the message: not sent, or unknown."""
    text = f"{label}: {type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.ConnectTimeout):
        return TransientError(text, code="connect_timeout")
    if isinstance(exc, httpx.PoolTimeout):
        return TransientError(text, code="pool_timeout")
    if isinstance(exc, httpx.ConnectError | httpx.WriteError | httpx.WriteTimeout | httpx.UnsupportedProtocol):
        # Nothing, or not the whole request, reached the server: it cannot have acted on it.
        return TransientError(text, code="connection")
    if isinstance(exc, httpx.TimeoutException):
        return OutcomeUnknown(text, code="timeout_after_send")
    return OutcomeUnknown(text, code="reset_after_send")  # ReadError, RemoteProtocolError, ...


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate verification against the system's CAs, or only those of `ca_file`."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))


class Http2Api:
    """POSTs to `base_url` + path over HTTP/2 and reads the answer; `open()` before the first request."""

    def __init__(
        self,
        base_url: str,
        *,
        label: str,
        timeout_s: float,
        ca_file: Path | None = None,
        connections: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = label
        self.timeout_s = timeout_s
        self.ca_file = ca_file
        self.connections = connections
        self._headers = dict(headers or {})
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"Http2Api(label={self.label!r}, base_url={self.base_url!r})"

    async def open(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                http1=False,
                http2=True,
                verify=tls_context(self.ca_file),
                trust_env=False,
                follow_redirects=False,
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections),
                headers=self._headers,
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> JsonAnswer:
        """POST `body` to `base_url + path`; the answer, whatever its status."""
        client = self._client
        if client is None:
            raise RuntimeError(f"{self!r} used before open()")
        try:
            response = await client.post(self.base_url + path, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            raise provider_error(exc, self.label) from exc
        parsed: Any = None
        if response.content:
            try:
                parsed = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                parsed = None
        return JsonAnswer(response.status_code, response.headers, parsed)
