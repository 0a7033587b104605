"""Shared pieces of the benchmarks: sinks, workspaces, child processes measured by the OS, tables.

Everything here talks to 127.0.0.1 only, and every process it starts has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BENCH_VENV = BENCH / ".venv"
SINK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


# --- environments -------------------------------------------------------------------------------


def bench_python() -> Path:
    """The bench's own interpreter (Apprise, py-spy live there), created on first use."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {BENCH_VENV} (Apprise, py-spy; once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(BENCH / "requirements.txt")], check=True, timeout=900
        )
    return python


def notifyctl_python() -> str:
    """The interpreter that has notifyctl installed: this one, or the project's .venv."""
    project = REPO / ".venv" / "bin" / "python"
    try:
        import notifyctl  # noqa: F401
    except ImportError:
        if project.exists():
            return str(project)
        raise SystemExit("notifyctl is not importable; run from the project venv (. .venv/bin/activate)") from None
    return sys.executable


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_gb:.1f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


# --- ports and sinks ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    client_body_buffer_size 64k;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return {status}; }}
    }}
}}
"""


@dataclass
class Sink:
    kind: str  # "nginx" or "aiohttp"
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def timestamps(self) -> list[float]:
        """Arrival times (time.time()) of every POST; only the aiohttp sink records them."""
        if self.kind != "aiohttp":
            raise RuntimeError("only the aiohttp sink records timestamps")
        with urllib.request.urlopen(f"{self.url}_timestamps", timeout=30) as response:
            import json

            stamps: list[float] = json.loads(response.read())
            return stamps


@contextlib.contextmanager
def http_sink(prefer: str = "nginx", status: int = 204) -> Iterator[Sink]:
    """nginx (one worker, no access log) if installed, else the aiohttp sink, in its own process."""
    port = free_port()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    with tempfile.TemporaryDirectory(prefix="notifyctl-sink-") as root:
        if prefer == "nginx" and nginx:
            os.chmod(root, 0o755)  # nginx workers may run as an unprivileged user
            conf = Path(root) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(root=root, port=port, status=status))
            cmd = [nginx, "-c", str(conf), "-p", root, "-e", f"{root}/error.log"]
            kind = "nginx"
        else:
            cmd = [sys.executable, str(BENCH / "sink.py"), "--port", str(port), "--status", str(status)]
            kind = "aiohttp"
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(port)
            yield Sink(kind, port, process)
        finally:
            stop(process)


@contextlib.contextmanager
def smtp_sink() -> Iterator[int]:
    """An aiosmtpd server that accepts and drops every message, in its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "sink.py"), "--smtp", "--port", str(port)], stdout=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        yield port
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # nginx: fast shutdown; the sinks: clean exit
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- measured child processes -------------------------------------------------------------------


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> Measured:
        if self.returncode != 0:
            raise SystemExit(f"{what} failed (exit {self.returncode}):\n{self.stdout[-2000:]}\n{self.stderr[-4000:]}")
        return self


def run_measured(
    cmd: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout_s: float = 1800
) -> Measured:
    """Run `cmd` to its end; wall time, CPU (user + sys) and peak RSS of that one child from wait4()."""
    started = time.perf_counter()
    process = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output: dict[str, bytes] = {}

    def drain(name: str, stream: object) -> None:
        output[name] = stream.read()  # type: ignore[attr-defined]

    readers = [
        threading.Thread(target=drain, args=(n, s), daemon=True)
        for n, s in (("out", process.stdout), ("err", process.stderr))
    ]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout_s, process.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(timeout=10)
    return Measured(
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        process.returncode,
        output.get("out", b"").decode(errors="replace"),
        output.get("err", b"").decode(errors="replace"),
    )


# --- workspaces -------------------------------------------------------------------------------


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


@dataclass
class Workspace:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "notifyctl.toml"

    @property
    def db_path(self) -> Path:
        return self.root / "notifyctl.db"

    def env(self) -> dict[str, str]:
        return {**os.environ, "NOTIFYCTL_CONFIG": str(self.config)}

    def cmd(self, *args: str) -> list[str]:
        return [notifyctl_python(), "-m", "notifyctl.cli", *args]

    def run(self, *args: str, timeout_s: float = 1800) -> Measured:
        return run_measured(self.cmd(*args), cwd=self.root, env=self.env(), timeout_s=timeout_s)


def make_workspace(root: Path, providers: dict[str, dict[str, object]], channels: dict[str, str]) -> Workspace:
    shutil.copytree(REPO / "templates", root / "templates")
    lines = ['database = "notifyctl.db"', 'templates_dir = "templates"', 'unsubscribe_secret = "bench-secret"', ""]
    for name, conf in providers.items():
        lines.append(f"[providers.{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in conf.items())
        lines.append("")
    lines.append("[channels]")
    lines.extend(f"{channel} = {toml_value(provider)}" for channel, provider in channels.items())
    lines += ["", "[retry]", "base_s = 0.05", "cap_s = 1.0", "max_attempts = 3", ""]
    root.joinpath("notifyctl.toml").write_text("\n".join(lines), encoding="utf-8")
    return Workspace(root)


def write_users(path: Path, n: int, webhook_url: str | None, start: int = 1) -> None:
    """A users file: user_id, email, locale, first_name, webhook_url, webhook_secret."""
    secret = SINK_SECRET if webhook_url else ""
    url = webhook_url or ""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("user_id,email,locale,first_name,webhook_url,webhook_secret\n")
        for start_i in range(start, start + n, 10000):
            fh.write(
                "".join(
                    f"u{i},user{i}@example.com,en,Name{i},{url},{secret}\n"
                    for i in range(start_i, min(start + n, start_i + 10000))
                )
            )


def write_audience(path: Path, n: int, start: int = 1) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("user_id,first_name\n")
        for start_i in range(start, start + n, 10000):
            fh.write("".join(f"u{i},Name{i}\n" for i in range(start_i, min(start + n, start_i + 10000))))


def write_campaign(path: Path, campaign_id: str, channels: Sequence[str], audience: str) -> None:
    path.write_text(
        f'id = {toml_value(campaign_id)}\ntemplate = "welcome"\n'
        f"channels = {toml_value(list(channels))}\naudience = {toml_value(audience)}\n"
        '[data]\nproduct_name = "Acme Cloud"\n',
        encoding="utf-8",
    )


# --- output -------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
