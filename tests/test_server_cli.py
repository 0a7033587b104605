"""`notifyctl serve` as a real process: SIGTERM stops it gracefully, accepted work stays in the
outbox, and `notifyctl resume RUN` finishes it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson

from notifyctl.store.db import connect
from notifyctl.store.keys import create_key
from tests.webhook_sink import WebhookSink, stall
from tests.workspace import make_workspace, users_csv

# `notifyctl` as its console script runs it.
SCRIPT = "from notifyctl.cli import main; main()"


def wait_for_url(proc: subprocess.Popen[bytes]) -> tuple[str, list[str]]:
    assert proc.stderr is not None
    seen: list[str] = []
    for raw in proc.stderr:
        line = raw.decode()
        seen.append(line)
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            return match[1], seen
    raise AssertionError("serve did not start: " + "".join(seen))


async def test_sigterm_keeps_accepted_work_for_resume(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    webhook_sink.on_path("/hook", stall(0.3))
    ws = make_workspace(tmp_path, webhook={"concurrency": 1})
    assert (
        ws.cli("users", "import", str(ws.write("u.csv", users_csv(1, webhook_url=webhook_sink.url())))).exit_code == 0
    )
    conn = connect(ws.db_path)
    key = create_key(conn, "test")
    conn.close()
    env = {**os.environ, "NOTIFYCTL_CONFIG": str(ws.config)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "serve", "--port", "0"],
        cwd=ws.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url, _ = await asyncio.to_thread(wait_for_url, proc)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            for i in range(5):
                body = {
                    "user_id": "u1",
                    "template": "welcome",
                    "channels": ["webhook"],
                    "data": {"product_name": "A"},
                    "idempotency_key": f"k{i}",
                }
                async with http.post(url + "/v1/notify", json=body) as resp:
                    assert resp.status == 202
                    run_id = (await resp.json())["run_id"]
        await asyncio.to_thread(webhook_sink.wait_for, 1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()
    states = ws.states(run_id)
    assert sum(states.values()) == 5 and states.get("pending", 0) >= 1, states
    assert "inflight" not in states  # the request in flight finished and was recorded
    access = [orjson.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert [a["status"] for a in access if a.get("route") == "/v1/notify"] == [202] * 5
    assert key not in stderr.decode()

    webhook_sink.on_path("/hook", stall(0))
    result = ws.run("resume", run_id, "--json")
    assert result.returncode == 0, result.stderr
    assert ws.states(run_id) == {"sent": 5}
    assert len({r.webhook_id for r in webhook_sink.requests}) == 5


async def raw_request(url: str, request: bytes) -> bytes:
    """Send `request` as it is on a new connection; the answer's status line and headers."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return (await reader.read(65536)).split(b"\r\n\r\n", 1)[0]
    finally:
        writer.close()


async def test_a_request_aiohttp_cannot_parse_leaves_no_header_value_in_the_log(tmp_path: Path) -> None:
    """aiohttp's parser quotes the bytes it refused: an over-long `Authorization` line (or one with a
    bad character) put the whole API key into the log."""
    ws = make_workspace(tmp_path)
    conn = connect(ws.db_path)
    key = create_key(conn, "test")
    conn.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "serve", "--port", "0"],
        cwd=ws.root,
        env={**os.environ, "NOTIFYCTL_CONFIG": str(ws.config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url, _ = await asyncio.to_thread(wait_for_url, proc)
        over_long = f"Bearer {key}{'A' * 9000}".encode()
        bad_char = f"Bearer {key}".encode() + b"\x01"
        for value in (over_long, bad_char):
            head = await raw_request(
                url,
                b"POST /v1/notify HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\nContent-Length: 0\r\n\r\n",
            )
            assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], head
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = stderr.decode()
    refused = [orjson.loads(line) for line in log.splitlines() if "unreadable request" in line]
    assert [(r["level"], r["logger"]) for r in refused] == [("warning", "aiohttp.server")] * 2, log
    assert "LineTooLong" in refused[0]["message"]
    secret_part = key.removeprefix("nk_")
    for start in range(0, len(secret_part) - 8, 4):  # not even a piece of the key
        assert secret_part[start : start + 8] not in log, log
