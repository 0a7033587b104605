"""The paths a delivery can take, each driven as an operator drives it, behind one small interface.

    embedded-1   `notifyctl broadcast` in one process
    embedded-2   `notifyctl broadcast` with two sender processes (`processes = 2`)
    redis        `notifyctl broadcast --redis` with two `notifyctl worker` processes on redis-server
    api          `notifyctl serve`, the notifications POSTed to /v1/notify (no audience file)
    kafka        `notifyctl consume`, the notifications produced as events to a Tansu broker (tests
                 choose it with `@pytest.mark.parametrize("path_name", ["kafka"])`: tests/contract/test_kafka.py)

`kill()` is kill -9 of every process of the path that sends (the broadcast and its sibling; the
coordinator and the workers; the server); `resume()` is what the operator does next (`notifyctl
resume RUN`; the same with new workers and `--redis`; starting `serve` again, the client posting
again what was not accepted).
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import aiohttp
import orjson

from notifyctl.store.db import connect
from notifyctl.store.keys import create_key
from tests.contract.world import CAMPAIGN_ID, Summary, World, wait_until

CAMPAIGNS = {
    "c.toml": (CAMPAIGN_ID, ["webhook"]),
    "all.toml": (CAMPAIGN_ID + "-all", ["webhook", "sms", "email"]),
    "push.toml": (CAMPAIGN_ID + "-push", ["push"]),
}


class Path:
    name = ""

    def __init__(self, world: World) -> None:
        self.world = world

    def start(self, campaign: str = "c.toml") -> None:
        raise NotImplementedError

    def finish(self, timeout_s: float = 90) -> Summary:
        """Wait until the started run has ended."""
        raise NotImplementedError

    def kill(self) -> None:
        """kill -9 the sending processes, and wait for them to be gone."""
        for proc in self.sending():
            proc.kill()
        for proc in self.sending():
            proc.wait()

    def sending(self) -> list[subprocess.Popen[bytes]]:
        raise NotImplementedError

    def signal_kill(self) -> None:
        """kill -9 the sending processes now (from another thread, e.g. the sink's: no waiting)."""
        for proc in self.sending():
            if proc.poll() is None:
                proc.kill()

    def resume(self, due: bool = False) -> Summary:
        """After a kill (or, with `due`, once deferred deliveries are due): run to the end."""
        raise NotImplementedError

    def run(self, campaign: str = "c.toml") -> Summary:
        self.start(campaign)
        return self.finish()

    def redrive(self, run_id: str) -> Summary:
        return self.world.cli("dlq", "redrive", "--run", run_id, "--json")

    @property
    def run_id(self) -> str:
        return self.world.run_ids()[-1]


class Embedded(Path):
    def __init__(self, world: World, processes: int) -> None:
        super().__init__(world)
        self.name = f"embedded-{processes}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, campaign: str = "c.toml") -> None:
        self.proc = self.world.spawn("broadcast", campaign, "--json")

    def finish(self, timeout_s: float = 90) -> Summary:
        assert self.proc is not None
        return self.world.wait(self.proc, timeout_s)

    def sending(self) -> list[subprocess.Popen[bytes]]:
        return [self.proc] if self.proc else []  # its sibling sender dies with it (PR_SET_PDEATHSIG)

    def resume(self, due: bool = False) -> Summary:
        target = ["--due"] if due else [self.run_id]
        return self.world.cli("resume", *target, "--json", timeout_s=90)


class Redis(Path):
    name = "redis"
    WORKERS = 2

    def __init__(self, world: World) -> None:
        super().__init__(world)
        assert world.redis is not None
        self.url = world.redis.url
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_workers(self) -> None:
        args = ("worker", "--redis", self.url, "--visibility-timeout", "1")
        with self.world.log_file("workers.log") as log:  # the workers keep their own copies of it
            self.workers = [self.world.spawn(*args, stdout=log, stderr=log) for _ in range(self.WORKERS)]

    def start(self, campaign: str = "c.toml") -> None:
        self.start_workers()
        self.coordinator = self.world.spawn("broadcast", campaign, "--redis", self.url, "--json")

    def finish(self, timeout_s: float = 90) -> Summary:
        assert self.coordinator is not None
        return self.world.wait(self.coordinator, timeout_s)

    def sending(self) -> list[subprocess.Popen[bytes]]:
        return [*([self.coordinator] if self.coordinator else []), *self.workers]

    def resume(self, due: bool = False) -> Summary:
        if not any(w.poll() is None for w in self.workers):
            self.start_workers()
        target = ["--due"] if due else [self.run_id]
        return self.world.cli("resume", *target, "--redis", self.url, "--json", timeout_s=90)

    def redrive(self, run_id: str) -> Summary:
        if not any(w.poll() is None for w in self.workers):
            self.start_workers()
        return self.world.cli("dlq", "redrive", "--run", run_id, "--redis", self.url, "--json")


class Api(Path):
    """Requests instead of an audience file: one POST /v1/notify per user, keyed by campaign and user."""

    name = "api"

    def __init__(self, world: World) -> None:
        super().__init__(world)
        conn = connect(world.ws.db_path)
        self.key = create_key(conn, "contract")
        conn.close()
        self.server: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.campaign = "c.toml"
        self.poster: threading.Thread | None = None
        self.accepted: set[str] = set()

    def start(self, campaign: str = "c.toml") -> None:
        self.campaign = campaign
        self.server, self.url = self.world.serve()
        self.poster = threading.Thread(target=self.post_all, daemon=True)
        self.poster.start()

    def post_all(self, users: list[str] | None = None) -> None:
        """POST every notification not yet accepted (a client retries what got no 2xx), or those of
        `users`."""
        import asyncio

        async def post() -> None:
            event_id, channels = CAMPAIGNS[self.campaign]
            headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
                for user in users or [f"u{i}" for i in range(1, self.world.n + 1)]:
                    key = f"{event_id}:{user}"
                    if key in self.accepted:
                        continue
                    body: dict[str, Any] = {
                        "user_id": user,
                        "template": "promo",
                        "channels": channels,
                        "data": {"product_name": "Acme"},
                        "idempotency_key": key,
                    }
                    try:
                        async with http.post(self.url + "/v1/notify", data=orjson.dumps(body)) as resp:
                            if resp.status in (200, 202):
                                self.accepted.add(key)
                    except (aiohttp.ClientError, TimeoutError, OSError):
                        return  # the server is gone (killed): resume() posts the rest

        asyncio.run(post())

    def settled(self) -> bool:
        _, channels = CAMPAIGNS[self.campaign]
        states = self.world.states()
        planned = sum(states.values())
        return (
            len(self.accepted) == self.world.n
            and planned >= self.world.n * len(channels)
            and not states.get("pending")
            and not states.get("inflight")
        )

    def finish(self, timeout_s: float = 90) -> Summary:
        assert self.poster is not None and self.server is not None
        self.poster.join(timeout_s)
        wait_until(self.settled, timeout_s, "every accepted notification settled")
        return self.outcome(self.world.stop(self.server))

    def outcome(self, stopped: Summary) -> Summary:
        """The server's exit status, as a run's exit code would have it: 1 where deliveries failed
        (dead, or held in doubt), as cron reads `notifyctl broadcast`'s."""
        states = self.world.states()
        failed = states.get("dead", 0) + states.get("in_doubt", 0)
        return Summary(1 if failed and stopped.code == 0 else stopped.code, stopped.out, stopped.err)

    def sending(self) -> list[subprocess.Popen[bytes]]:
        return [self.server] if self.server else []

    def kill(self) -> None:
        super().kill()
        if self.poster is not None:
            self.poster.join(30)

    def resume(self, due: bool = False) -> Summary:
        """`serve` again: it finishes earlier API runs at start; the client posts what was refused."""
        self.server, self.url = self.world.serve()
        self.post_all()
        wait_until(self.settled, 90, "every accepted notification settled")
        return self.outcome(self.world.stop(self.server))


class Kafka(Api):
    """Events instead of requests: one NotificationRequested event per user on the topic, keyed by
    user, consumed by `notifyctl consume`; `resume()` starts the consumer again, which finishes its
    earlier run and reads on from the committed offsets."""

    name = "kafka"
    topic = "notification.events"

    def __init__(self, world: World) -> None:
        from tests.kafka_broker import TansuBroker, run

        super().__init__(world)
        self.broker = TansuBroker().__enter__()
        assert self.broker.process is not None
        world.procs.append(self.broker.process)  # torn down with the world (kill_all)
        run(self.broker.create_topic(self.topic))

    def start(self, campaign: str = "c.toml") -> None:
        from tests.kafka_broker import run

        self.campaign = campaign
        event_id, channels = CAMPAIGNS[campaign]
        events: list[dict[str, Any] | bytes] = [
            {"userId": f"u{i}", "template": "promo", "channels": channels, "eventId": event_id,
             "payload": {"product_name": "Acme"}}
            for i in range(1, self.world.n + 1)
        ]  # fmt: skip
        run(self.broker.produce(self.topic, events))
        self.accepted = {f"{event_id}:u{i}" for i in range(1, self.world.n + 1)}  # on the topic: durable
        self.server = self.consume()

    def consume(self) -> subprocess.Popen[bytes]:
        """`notifyctl consume` once it is consuming; its stderr kept drained into `server_log`."""
        proc = self.world.spawn("consume", "--kafka", self.broker.bootstrap, "--topic", self.topic, "--json",
                                stdout=subprocess.DEVNULL)  # fmt: skip
        stderr = proc.stderr
        assert stderr is not None
        for raw in stderr:
            line = raw.decode()
            self.world.server_log.append(line)
            if "notifyctl consume: consuming" in line:
                threading.Thread(target=self.world._drain, args=(stderr,), daemon=True).start()
                return proc
        raise AssertionError("consume did not start: " + "".join(self.world.server_log))

    def finish(self, timeout_s: float = 90) -> Summary:
        assert self.server is not None
        wait_until(self.settled, timeout_s, "every event settled")
        return self.outcome(self.world.stop(self.server))

    def kill(self) -> None:
        Path.kill(self)

    def resume(self, due: bool = False) -> Summary:
        self.server = self.consume()
        wait_until(self.settled, 90, "every event settled")
        return self.outcome(self.world.stop(self.server))


PATHS = ("embedded-1", "embedded-2", "redis", "api")


def make_path(name: str, world: World) -> Path:
    if name == "embedded-1":
        return Embedded(world, 1)
    if name == "embedded-2":
        return Embedded(world, 2)
    if name == "redis":
        return Redis(world)
    if name == "kafka":
        return Kafka(world)
    return Api(world)
