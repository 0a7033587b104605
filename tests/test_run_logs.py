"""Logs that exist (issue 17.4): every run writes JSON lines to --log-file (NOTIFYCTL_LOG), through
the allowlist and redaction, from every process that sends; -v and -q on every command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.redis_server import RedisServer
from tests.unreachable import closed_port
from tests.workspace import SINK_SECRET, Workspace, audience_csv, campaign_toml, make_workspace, users_csv


def _run(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a process of its own (logging is configured per process)."""
    return subprocess.run(
        [sys.executable, "-m", "notifyctl.cli", *args],
        cwd=ws.root,
        env={**os.environ, "NOTIFYCTL_CONFIG": str(ws.config), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def test_a_send_retried_to_a_dead_webhook_writes_each_attempt_to_the_log_file(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)  # retry.max_attempts = 4, a few ms apart
    ws.write("users.csv", users_csv(1, webhook_url=f"http://127.0.0.1:{closed_port()}/hooks/secret-path"))
    assert _run(ws, "users", "import", "users.csv").returncode == 0
    log = tmp_path / "logs" / "notifyctl.jsonl"
    sent = _run(
        ws, "--log-file", str(log), "--log-level", "debug",
        "send", "-t", "welcome", "-u", "u1", "--channel", "webhook", "--data", '{"product_name": "Zanzibar"}', "--json",
    )  # fmt: skip
    assert sent.returncode == 1, sent.stderr  # dead after 4 attempts
    lines = _lines(log)
    assert [line["event"] for line in lines] == [
        "run_started",
        *["attempt", "retry_scheduled"] * 3,
        "attempt",
        "dead_letter",
        "run_finished",
    ]
    run_id = orjson.loads(sent.stdout)["run_id"]
    attempts = [line for line in lines if line["event"] == "attempt"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    for attempt in attempts:
        assert attempt["run_id"] == run_id and attempt["level"] == "debug"
        assert attempt["outcome"] == "not_sent" and attempt["error_class"] == "TransientError"
        assert attempt["channel"] == "webhook" and attempt["provider"] == "webhook"
        assert attempt["address_masked"] == "http://127.0.0.1/…"
    assert [line["state"] for line in attempts] == ["pending", "pending", "pending", "dead"]
    assert all(line["retry_in_s"] >= 0 for line in lines if line["event"] == "retry_scheduled")
    finished = lines[-1]
    assert finished["state"] == "completed_with_failures" and finished["count_dead"] == 1
    text = log.read_text()
    for leak in ("secret-path", "Zanzibar", "user1@example.com", SINK_SECRET, "Connection refused"):
        assert leak not in text  # no address in clear, no body, no secret, no provider error text


def test_notifyctl_log_is_the_log_file_not_a_configuration_key(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(3))
    ws.write("aud.csv", audience_csv(3))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["email", "inapp"], "aud.csv"))
    log = tmp_path / "from-env.jsonl"
    env = {"NOTIFYCTL_LOG": str(log)}
    assert _run(ws, "users", "import", "users.csv", env=env).returncode == 0
    listed = _run(ws, "runs", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    sent = _run(ws, "broadcast", "c.toml", env=env)
    assert sent.returncode == 0, sent.stderr
    lines = _lines(log)  # info, the default level: the run's events, not each attempt
    assert [line["event"] for line in lines] == ["run_started", "run_finished"]
    assert lines[1]["count_sent"] == 6 and lines[1]["sent_this_session"] == 6
    assert "NOTIFYCTL_LOG" in _run(ws, "--help").stdout


def test_every_sender_process_writes_its_attempts_to_the_same_log(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, top="processes = 2")
    ws.write("users.csv", users_csv(40))
    ws.write("aud.csv", audience_csv(40))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["inapp"], "aud.csv"))
    assert _run(ws, "users", "import", "users.csv").returncode == 0
    log = tmp_path / "run.jsonl"
    sent = _run(ws, "--log-file", str(log), "-vv", "broadcast", "c.toml")
    assert sent.returncode == 0, sent.stderr
    lines = _lines(log)
    assert sorted(line["shard"] for line in lines if line["event"] == "run_started") == ["0/2", "1/2"]
    attempts = [line for line in lines if line["event"] == "attempt"]
    assert sorted(a["delivery_id"] for a in attempts) == list(range(1, 41))  # each once, whoever sent it
    assert all(a["outcome"] == "sent" and "address_masked" not in a for a in attempts)  # in-app: the user id


def test_verbose_and_quiet_are_taken_anywhere_on_the_command_line(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(2))
    quiet = _run(ws, "users", "import", "users.csv", "-q")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    ws.write("aud.csv", audience_csv(2))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["inapp"], "aud.csv"))
    loud = _run(ws, "broadcast", "c.toml", "--json", "-v")
    assert loud.returncode == 0, loud.stderr
    events = [orjson.loads(line)["event"] for line in loud.stderr.splitlines() if line.startswith("{")]
    assert events == ["run_started", "run_finished"]  # -v: info on stderr; -vv adds each attempt
    assert orjson.loads(loud.stdout)["counts"] == {"inapp": {"sent": 2}}
    refused = _run(ws, "-q", "runs", "show", "run_nope")
    assert refused.returncode == 2 and "run_nope" in refused.stderr  # errors still


def test_redis_workers_write_their_attempts_to_their_own_log(tmp_path: Path) -> None:
    """A worker is a process of its own (`notifyctl --log-file W -vv worker`): its attempts go to its
    log; the coordinator's run lines to the coordinator's."""
    ws = make_workspace(tmp_path)
    ws.write("users.csv", users_csv(12))
    ws.write("aud.csv", audience_csv(12))
    ws.write("c.toml", campaign_toml("c1", "welcome", ["inapp"], "aud.csv"))
    assert _run(ws, "users", "import", "users.csv").returncode == 0
    worker_log, coordinator_log = tmp_path / "worker.jsonl", tmp_path / "coordinator.jsonl"
    with RedisServer() as redis:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "notifyctl.cli",
                "--log-file",
                str(worker_log),
                "-vv",
                "worker",
                "--redis",
                redis.url,
            ],
            cwd=ws.root,
            env={**os.environ, "NOTIFYCTL_CONFIG": str(ws.config)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            sent = _run(ws, "--log-file", str(coordinator_log), "broadcast", "c.toml", "--redis", redis.url, "--json")
            assert sent.returncode == 0, sent.stderr
        finally:
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr.decode()
    attempts = [line for line in _lines(worker_log) if line["event"] == "attempt"]
    assert sorted(a["delivery_id"] for a in attempts) == list(range(1, 13))
    assert {a["outcome"] for a in attempts} == {"sent"}
    assert [line["event"] for line in _lines(coordinator_log)] == ["run_started", "run_finished"]
