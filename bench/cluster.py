"""One machine's embedded mode against coordinator + N workers on Redis, on the same machine.

    python bench/cluster.py --recipients 20000                # webhook to a local sink, 2 workers
    python bench/cluster.py --recipients 20000 --workers 3

Both modes send the same broadcast (webhook channel, provider rate high enough not to bind) to
the same sink (nginx if installed, else bench/sink.py) from fresh workspaces. The embedded run is
`notifyctl broadcast`; the cluster run starts a private redis-server (no persistence), the
workers (`notifyctl worker --redis URL`) and the coordinator (`notifyctl broadcast --redis URL`).
Wall time, CPU and peak RSS of every process come from the OS (wait4); the send rate from the run's
own started/finished times; the Redis round trips per message from redis-server's own counters
(`INFO commandstats`: script calls, transactions and the stream reads, not the commands inside
them), which is what the batching of claims, outcomes, publications and token requests brings down.
Figures are printed, not asserted: on one machine the cluster pays for Redis round trips and more
processes, and gains only where one process's CPU was the limit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Workspace,
    free_port,
    http_sink,
    machine,
    make_workspace,
    notifyctl_python,
    run_measured,
    table,
    wait_port,
    write_audience,
    write_campaign,
    write_users,
)


@dataclass
class Figures:
    mode: str
    sent: int
    send_s: float  # the run's own started → finished
    wall_s: float  # the driving process, start-up included
    cpu_s: float  # every process of the mode, redis-server included
    peak_rss_mb: float  # the largest single process
    redis_requests: int = 0  # round trips to redis-server during the run


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="notifyctl-bench-redis-") as root:
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", root, "--save", "", "--appendonly", "no"]
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            yield f"redis://127.0.0.1:{port}/0", process
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=10)


def workspace(root: Path, n: int, sink_url: str) -> Workspace:
    providers: dict[str, dict[str, object]] = {
        "webhook": {"type": "webhook", "rate": 1_000_000, "concurrency": 64, "timeout_s": 10,
                    "allow_hosts": ["127.0.0.1"]},
    }  # fmt: skip
    ws = make_workspace(root, providers, {"webhook": "webhook"})
    write_users(root / "users.csv", n, sink_url)
    write_audience(root / "aud.csv", n)
    write_campaign(root / "c.toml", "bench", ["webhook"], "aud.csv")
    ws.run("users", "import", "users.csv").check("users import")
    return ws


def info(port: int, section: str) -> str:
    """An INFO section of redis-server, read over a plain socket."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"INFO {section}\r\n".encode())
        data = sock.recv(65536)
        size = int(data.split(b"\r\n", 1)[0][1:])
        while len(data) < size + len(str(size)) + 5:
            data += sock.recv(65536)
    return data.decode().split("\r\n", 1)[1]


# Commands a client sends itself; the others (XADD, HSET, GET, …) run inside the scripts and the
# MULTI/EXEC transactions that batch a round trip's work, and are not round trips of their own.
CLIENT_REQUESTS = ("evalsha", "eval", "exec", "xreadgroup", "xautoclaim", "xclaim", "xpending", "hexists", "hgetall")


def requests_made(port: int) -> int:
    """Round trips the clients made so far, from redis-server's own counters (INFO commandstats)."""
    total = 0
    for line in info(port, "commandstats").splitlines():
        name, _, fields = line.partition(":")
        if name.removeprefix("cmdstat_") in CLIENT_REQUESTS:
            total += int(fields.split(",", 1)[0].removeprefix("calls="))
    return total


def run_times(ws: Workspace) -> tuple[int, float]:
    with sqlite3.connect(ws.db_path) as conn:
        started, finished = conn.execute("SELECT started, finished FROM runs").fetchone()
        sent = conn.execute("SELECT count(*) FROM deliveries WHERE state='sent'").fetchone()[0]
    span = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return int(sent), max(span, 1e-6)


def reap(process: subprocess.Popen[bytes]) -> tuple[float, float]:
    """Stop a child and return its (CPU s, peak RSS MB) from wait4."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 0
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def embedded(root: Path, n: int, sink_url: str) -> Figures:
    ws = workspace(root, n, sink_url)
    measured = ws.run("broadcast", "c.toml", "--json").check("embedded broadcast")
    sent, span = run_times(ws)
    return Figures("embedded (1 process)", sent, span, measured.wall_s, measured.cpu_s, measured.max_rss_mb)


def cluster(root: Path, n: int, sink_url: str, workers: int) -> Figures:
    ws = workspace(root, n, sink_url)
    python = notifyctl_python()
    with redis_server() as (url, redis_process):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        procs = [
            subprocess.Popen([python, "-m", "notifyctl.cli", "worker", "--redis", url], cwd=ws.root,
                             env=ws.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]  # fmt: skip
        time.sleep(2)  # let the workers import and connect, so the coordinator is what is measured
        before = requests_made(port)
        coordinator = run_measured(
            [python, "-m", "notifyctl.cli", "broadcast", "c.toml", "--redis", url, "--json"],
            cwd=ws.root,
            env=ws.env(),
        ).check("coordinator")
        commands = requests_made(port) - before
        if os.environ.get("BENCH_COMMANDSTATS"):
            print(info(port, "commandstats"))
        usages = [reap(p) for p in procs]
        redis_cpu, redis_rss = reap(redis_process)
    sent, span = run_times(ws)
    cpu = coordinator.cpu_s + sum(c for c, _ in usages) + redis_cpu
    rss = max([coordinator.max_rss_mb, redis_rss, *(r for _, r in usages)])
    return Figures(f"coordinator + {workers} workers", sent, span, coordinator.wall_s, cpu, rss, commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sink", choices=["nginx", "aiohttp"], default="nginx")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with http_sink(args.sink) as sink, tempfile.TemporaryDirectory(prefix="notifyctl-bench-cluster-") as root:
        print(f"sink: {sink.kind}; recipients: {args.recipients}")
        results = [
            embedded(Path(root) / "embedded", args.recipients, sink.url),
            cluster(Path(root) / "cluster", args.recipients, sink.url, args.workers),
        ]
    rows = [
        [f.mode, f.sent, f"{f.send_s:.2f}", f"{f.sent / f.send_s:,.0f}", f"{f.wall_s:.2f}", f"{f.cpu_s:.2f}",
         f"{f.cpu_s * 1000 / max(1, f.sent):.2f}", f"{f.peak_rss_mb:.0f}",
         f"{f.redis_requests / max(1, f.sent):.2f}" if f.redis_requests else "-"]
        for f in results
    ]  # fmt: skip
    headers = [
        "mode",
        "sent",
        "send s",
        "msgs/s",
        "wall s",
        "CPU s (all)",
        "CPU ms/msg",
        "peak RSS MB",
        "Redis cmds/msg",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
