"""The world a guarantee test runs in: a workspace, real local peers, and notifyctl as real processes.

Peers: the signature-checking webhook sink (one path per user, so it tells recipients apart), the
fake Twilio API (SMS), the outbox folder (email), the fake FCM API (push), a fake SNS certificate
host (SES bounces), a real redis-server for the Redis path, and `notifyctl serve` for the inbound
opt-outs (STOP, one-click, bounces) and for the API path.

Every user u{i} has a webhook endpoint at /u{i}, a phone, an email address and a push token t{i},
and has opted in to marketing SMS (consent), so that every kind of opt-out has a channel to act on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.fakes.sns import FakeSns
from tests.fakes.twilio import FakeTwilio
from tests.redis_server import RedisServer
from tests.webhook_sink import SINK_SECRET, WebhookSink
from tests.workspace import Workspace, campaign_toml, make_workspace, toml_value

HERE = Path(__file__).resolve().parent
CAMPAIGN_ID = "promo-1"
PUBLIC_URL = "https://notify.example.com"
UNSUBSCRIBE_SECRET = "test-secret"


def phone(i: int) -> str:
    return f"+1415555{1000 + i}"


def email(i: int) -> str:
    return f"user{i}@example.com"


def push_token(i: int, service: str = "fcm") -> str:
    """User u{i}'s push token in the directory: t{i} for FCM, 64 hex digits for APNs."""
    return f"{i:064x}" if service == "apns" else f"t{i}"


@dataclass
class Summary:
    """How a notifyctl process ended."""

    code: int | None
    out: str
    err: str

    @property
    def json(self) -> dict[str, Any]:
        found: dict[str, Any] = orjson.loads(self.out)
        return found


@dataclass
class World:
    root: Path
    ws: Workspace
    sink: WebhookSink
    twilio: FakeTwilio
    sns: FakeSns
    n: int
    redis: RedisServer | None = None
    fcm: FakeFcm | None = None
    apns: FakeApns | None = None
    push_service: str = "fcm"  # the service of every user's push token
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server_log: list[str] = field(default_factory=list)

    # --- processes ------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        from tests.kafka_broker import FAST_GROUP_ENV  # read by `notifyctl consume` only

        return {**os.environ, **FAST_GROUP_ENV, "NOTIFYCTL_CONFIG": str(self.ws.config)}

    def spawn(
        self, *args: str, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "notifyctl.cli", *args],
            cwd=self.root,
            env=self.env(),
            stdout=stdout,
            stderr=stderr,
        )
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> Summary:
        out, err = proc.communicate(timeout=timeout_s)
        return Summary(proc.returncode, out.decode() if out else "", err.decode() if err else "")

    def cli(self, *args: str, timeout_s: float = 60) -> Summary:
        return self.wait(self.spawn(*args), timeout_s)

    def quiet_hours(self, start: str, end: str) -> None:
        """Set the quiet window (HH:MM:SS) in the configuration, as late as possible before a run:
        the window is relative to now, whatever the workspace's set-up took."""
        text = self.ws.config.read_text()
        text = re.sub(r"(?m)^start = .*$", f"start = {start}", text, count=1)
        text = re.sub(r"(?m)^end = .*$", f"end = {end}", text, count=1)
        self.ws.config.write_text(text)

    def log_file(self, name: str) -> Any:
        """A file in the workspace for a long-running process's output (a pipe nobody reads fills up)."""
        return (self.root / name).open("ab")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
        self.procs = [p for p in self.procs if p.poll() is None]

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> Summary:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout_s)
        return Summary(code, "", "".join(self.server_log[-50:]))

    def serve(self, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
        """`notifyctl serve --port 0`: its stderr read until it says where it listens, then kept
        drained (its access log would fill the pipe and block it) into `self.server_log`."""
        proc = self.spawn("serve", "--port", "0", *extra, stdout=subprocess.DEVNULL)
        stderr = proc.stderr
        assert stderr is not None
        for raw in stderr:
            line = raw.decode()
            self.server_log.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                threading.Thread(target=self._drain, args=(stderr,), daemon=True).start()
                return proc, match[1]
        raise AssertionError("serve did not start: " + "".join(self.server_log))

    def _drain(self, stream: Any) -> None:
        for raw in stream:
            self.server_log.append(raw.decode(errors="replace"))

    # --- the database ----------------------------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.ws.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def rows(self, channel: str = "webhook") -> dict[str, dict[str, Any]]:
        """Per user: their delivery row on a channel (state, reason, in_doubt, attempts, message id)."""
        with self.db() as conn:
            found = conn.execute(
                "SELECT user_id, id, run_id, state, reason, in_doubt, attempts, message_id FROM deliveries "
                "WHERE channel=? ORDER BY id",
                (channel,),
            ).fetchall()
        by_user: dict[str, dict[str, Any]] = {}
        for row in found:
            assert row["user_id"] not in by_user or by_user[row["user_id"]]["run_id"] != row["run_id"], row
            by_user[row["user_id"]] = dict(row)
        return by_user

    def states(self) -> Counter[str]:
        with self.db() as conn:
            return Counter({s: n for s, n in conn.execute("SELECT state, count(*) FROM deliveries GROUP BY 1")})

    def integrity(self) -> str:
        with self.db() as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])

    def run_ids(self) -> list[str]:
        with self.db() as conn:
            return [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY created")]

    def webhook_hits(self) -> Counter[str]:
        """Requests per user at the webhook sink."""
        return Counter(r.path.lstrip("/") for r in self.sink.requests)


def make_world(
    root: Path,
    n: int,
    *,
    sink: WebhookSink,
    twilio: FakeTwilio,
    sns: FakeSns,
    redis: RedisServer | None,
    processes: int,
    fcm: FakeFcm | None = None,
    apns: FakeApns | None = None,
    push_service: str = "fcm",
    rate: float = 200.0,
    burst: int = 10,
    quiet_webhook: bool = False,
    quiet: tuple[str, str] | None = None,
) -> World:
    """A workspace whose campaign `c.toml` sends template `promo` to u1..u{n} on webhook (and
    `all.toml` on webhook, SMS and email; `push.toml` on push, through `fcm`, or `apns` for the
    APNs tokens of `push_service = "apns"`)."""
    limits = {"rate": rate, "burst": burst}
    providers = {
        "webhook": {
            "type": "webhook",
            "concurrency": 8,
            "timeout_s": 2,
            "allow_hosts": ["127.0.0.1"],
            **limits,
        },
        "twilio": {"type": "twilio", **twilio.provider_settings(), "concurrency": 4, **limits},
        "outbox": {"type": "outbox", "path": "outbox", "concurrency": 4, **limits},
    }
    channels = {"webhook": "webhook", "sms": "twilio", "email": "outbox"}
    if fcm is not None:
        key_file = fcm.write_service_account(root / "fcm-service-account.json")
        providers["fcm"] = {
            "type": "fcm",
            **fcm.provider_settings(key_file),
            "timeout_s": 2,
            "concurrency": 4,
            **limits,
        }
    push_providers = ["fcm"] if fcm is not None else []
    if apns is not None:
        key_file, ca_file = apns.write_key(root / "AuthKey.p8"), apns.write_ca(root / "apns-ca.pem")
        providers["apns"] = {"type": "apns", **apns.provider_settings(key_file, ca_file), "timeout_s": 2, **limits}
        push_providers.append("apns")  # each token goes through a provider of its own push service
    quiet_channels = ["webhook"] if quiet_webhook else []
    top = "\n".join(
        [
            f"processes = {processes}",
            f"public_url = {toml_value(PUBLIC_URL)}",
            "release_due_every_s = 0.5",
        ]
    )
    extra = "\n".join(
        [
            *(["[channels.push]", f"providers = {toml_value(push_providers)}"] if push_providers else []),
            "[quiet_hours]",
            f"channels = {toml_value(quiet_channels)}",
            *([f"start = {quiet[0]}", f"end = {quiet[1]}"] if quiet else []),
            "[server]",
            'sns_cert_hosts = ["127.0.0.1"]',
            'sns_subscribe_hosts = ["127.0.0.1"]',
            "sns_allow_http = true",
            "[categories.marketing]",
            'opt_in_required = ["sms"]',
            f"quiet_hours = {toml_value(quiet_webhook)}",
            'priority = "low"',
            "list_unsubscribe = true",
        ]
    )
    ws = make_workspace(
        root,
        providers=providers,
        channels=channels,
        top=top,
        extra=extra,
        retry={"max_attempts": 3},
    )
    shutil.copytree(HERE / "templates" / "promo", root / "templates" / "promo")
    # A profile time zone: quiet hours are counted in it (without one, in the phone number's zones).
    header = "user_id,email,phone,locale,timezone,first_name,webhook_url,webhook_secret,push_tokens,push_service"
    rows = [header] + [
        f"u{i},{email(i)},{phone(i)},en,UTC,Name{i},{sink.url(f'/u{i}')},{SINK_SECRET},"
        f"{push_token(i, push_service)},{push_service}"
        for i in range(1, n + 1)
    ]
    ws.write("users.csv", "\n".join(rows) + "\n")
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    with sqlite3.connect(ws.db_path) as conn:  # everyone opted in to marketing SMS (consent)
        now = "2026-01-01T00:00:00+00:00"
        conn.executemany(
            "INSERT INTO preferences VALUES (?, 'sms', 'marketing', 1, 'signup', ?)",
            [(f"u{i}", now) for i in range(1, n + 1)],
        )
    ws.write("aud.csv", "user_id\n" + "".join(f"u{i}\n" for i in range(1, n + 1)))
    ws.write("c.toml", campaign_toml(CAMPAIGN_ID, "promo", ["webhook"], "aud.csv"))
    ws.write("all.toml", campaign_toml(CAMPAIGN_ID + "-all", "promo", ["webhook", "sms", "email"], "aud.csv"))
    ws.write("push.toml", campaign_toml(CAMPAIGN_ID + "-push", "promo", ["push"], "aud.csv"))
    return World(root, ws, sink, twilio, sns, n, redis, fcm, apns, push_service)


def wait_until(check: Any, timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s} s")
        time.sleep(0.02)
