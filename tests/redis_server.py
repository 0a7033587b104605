"""A real redis-server for tests: a free port, a temp dir, no persistence, torn down after."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """`with RedisServer() as server: server.url` — one private redis-server process."""

    def __init__(self) -> None:
        self.port = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, port: int | None = None) -> None:
        """Start it (on `port`: the same address again, after `shutdown`)."""
        if not Path(REDIS_SERVER).exists():
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.dir = self.dir or Path(tempfile.mkdtemp(prefix="notifyctl-redis-"))
        for _ in range(5):  # another process may take the port between probe and bind
            self.port = port or _free_port()
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.dir),
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "yes",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready():
                return
            self.process.kill()
            self.process.wait()
        raise RuntimeError("redis-server did not start")

    def _wait_ready(self, timeout_s: float = 5.0) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def shutdown_nosave(self) -> None:
        """What a restart without persistence does to the data: SHUTDOWN NOSAVE; everything is gone."""
        assert self.process is not None
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"SHUTDOWN NOSAVE\r\n")
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server per test (import this fixture into the test module)."""
    with RedisServer() as server:
        yield server
