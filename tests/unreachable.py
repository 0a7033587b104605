"""Local places a request can never reach, for the "not sent" side of the outcome tables.

closed_port()          a port nobody listens on: the connection is refused at once
with Blackhole() as p  a listener whose accept queue is full: connecting hangs until the
                       client's connect timeout (Linux drops the SYN of a full queue)
with NotTls() as p     answers every connection with bytes that are not TLS, then closes:
                       an https client fails its handshake
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Self


def closed_port() -> int:
    """A port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Blackhole:
    """A listening socket that never accepts, its backlog already taken by other connections."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._fillers: list[socket.socket] = []
        self.port = 0

    def __enter__(self) -> Self:
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(0)
        self.port = self._server.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)
        time.sleep(0.05)  # let the handshakes of the fillers fill the queue
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for filler in self._fillers:
            filler.close()
        self._server.close()


class NotTls:
    """A server that writes a line of plain text on every connection and closes it."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="not-tls", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(b"SSH-2.0-not-tls\r\n")
