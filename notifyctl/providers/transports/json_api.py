"""A JSON-over-HTTP API at one base URL, through one aiohttp session (Postmark, FCM).

    api = JsonApi("https://api.example.com", label="Example", timeout_s=10, connections=32)
    await api.open()
    answer = await api.post("/v1/send", {"to": "..."}, headers={"Authorization": "Bearer ..."})
    answer.status, answer.headers, answer.body   # body: the parsed JSON, or None
    await api.close()

What the providers need from it and nothing more: the base URL is a setting (tests point it at a
local fake), `timeout_s` for connecting and again for the answer (aiohttp's distinct connect and
read timeouts, so that a failure says whether the request was sent), redirects never followed, no
proxies or cookies from the environment, at most `connections` connections, and no retries. The
answer is returned whatever its status: what a status means is the provider's business. What
never became an answer is mapped in transports/aiohttp_errors.py, in one place for every aiohttp
client: not sent before the request was written (TransientError `connect_timeout`,
`connection`), unknown after (OutcomeUnknown `timeout_after_send`, `reset_after_send`,
`bad_response`), and a base URL that cannot be used a PermanentError (`bad_url`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from notifyctl.providers.transports.aiohttp_errors import client_timeout, provider_error


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """An HTTP answer: its status, its headers and its body parsed as JSON (None when it is not JSON)."""

    status: int
    headers: Mapping[str, str]
    body: Any


@contextmanager
def mapped_errors(label: str) -> Iterator[None]:
    """aiohttp and socket exceptions as provider errors (aiohttp_errors.provider_error)."""
    try:
        yield
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise provider_error(exc, label) from exc


class JsonApi:
    """POSTs JSON to `base_url` + path and reads the answer; `open()` before the first request."""

    def __init__(
        self,
        base_url: str,
        *,
        label: str,
        timeout_s: float,
        connections: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = label
        self.timeout_s = timeout_s
        self.connections = connections
        self._headers = {"Accept": "application/json", "Content-Type": "application/json", **(headers or {})}
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"JsonApi(label={self.label!r}, base_url={self.base_url!r})"

    async def open(self) -> None:
        """Create the session (and its connection pool)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=client_timeout(self.timeout_s),
                headers=self._headers,
            )

    async def close(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(self, path: str, payload: Any, headers: Mapping[str, str] | None = None) -> JsonAnswer:
        """POST `payload` as JSON to `base_url + path`; the answer, whatever its status."""
        session = self._session
        if session is None:
            raise RuntimeError(f"{self!r} used before open()")
        with mapped_errors(self.label):
            async with session.post(
                self.base_url + path, data=orjson.dumps(payload), headers=headers, allow_redirects=False
            ) as response:
                status, answer_headers = response.status, response.headers
                try:
                    raw = await response.read()
                except (aiohttp.ClientError, TimeoutError, OSError):
                    if 200 <= status < 300:
                        raise  # an accepted request whose answer was lost: unknown
                    raw = b""  # an error status is the answer, even when its body is cut short
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        return JsonAnswer(status, answer_headers, body)
