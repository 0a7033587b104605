"""What an aiohttp failure says about a request: not sent, or sent with its outcome unknown.

Shared by the JSON APIs (Postmark, FCM: transports/json_api.py) and Twilio (the SDK's aiohttp
client). The line between the two is whether the request may have reached the provider whole:

    not sent (TransientError)   ConnectionTimeoutError: no connection (or none free in the pool)
                                before `connect` / `sock_connect`; ClientConnectorError: DNS,
                                refused, TLS handshake, certificate; ClientConnectionResetError:
                                the connection closed while the request was being written
    unknown (OutcomeUnknown)    SocketTimeoutError: no answer within `sock_read`; a bare
                                TimeoutError: the total deadline, which cannot say where it struck;
                                ServerDisconnectedError, ClientOSError: the connection ended before
                                the answer; ClientPayloadError, ClientResponseError: an answer
                                truncated or not HTTP; any other ClientError or OSError
    rejected (PermanentError)   InvalidURL: the base URL setting cannot be used

ClientOSError also covers "Can not write request body": a request cut short cannot have been
processed, but aiohttp gives it the same class as a reset after the request was written, so it is
counted as unknown; a held message is better than one sent twice.
"""

from __future__ import annotations

import aiohttp

from notifyctl.errors import OutcomeUnknown, PermanentError, ProviderError, TransientError

TOTAL_TIMEOUTS = 3  # the total deadline, in connect or read timeouts: a backstop for a trickling answer


def client_timeout(timeout_s: float) -> aiohttp.ClientTimeout:
    """Distinct deadlines for connecting (not sent when it passes) and for the answer (unknown)."""
    return aiohttp.ClientTimeout(
        total=TOTAL_TIMEOUTS * timeout_s, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
    )


def provider_error(exc: BaseException, label: str) -> ProviderError:
    """The provider error an aiohttp, socket or timeout exception means (see the module's table)."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return PermanentError(f"invalid {label} base URL: {exc}", code="bad_url")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransientError(f"{label}: no connection before the timeout (not sent)", code="connect_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerFingerprintMismatch):
        return TransientError(f"{label}: cannot connect (not sent): {detail}", code="connection")
    if isinstance(exc, aiohttp.ClientConnectionResetError):
        return TransientError(f"{label}: connection closed while writing the request (not sent)", code="connection")
    if isinstance(exc, TimeoutError):  # SocketTimeoutError, or the total deadline
        message = f"{label}: no answer in time after the request was sent: {detail}"
        return OutcomeUnknown(message, code="timeout_after_send")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return OutcomeUnknown(f"{label}: unreadable answer after the request was sent: {detail}", code="bad_response")
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return OutcomeUnknown(f"{label}: connection lost after the request was sent: {detail}", code="reset_after_send")
    return OutcomeUnknown(f"{label}: {detail}", code="bad_response")
