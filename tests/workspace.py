"""A throw-away notifyctl workspace: config, templates, users, audience files, and ways to run the CLI."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from notifyctl.cli import app

REPO = Path(__file__).resolve().parent.parent
SINK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def toml_value(value: Any) -> str:
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

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path)
        conn.row_factory = sqlite3.Row
        return conn

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def cli(self, *args: str, input: str | None = None) -> Any:
        """Run the CLI in-process (fast); returns click's Result (exit_code, stdout, stderr)."""
        runner = CliRunner()
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            return runner.invoke(app, ["--config", str(self.config), *args], input=input, catch_exceptions=False)
        finally:
            os.chdir(cwd)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Run the CLI as a real process (for kill -9 tests)."""
        env = {**os.environ, "NOTIFYCTL_CONFIG": str(self.config)}
        return subprocess.Popen(
            [sys.executable, "-m", "notifyctl.cli", *args],
            cwd=self.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **kwargs,
        )

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "NOTIFYCTL_CONFIG": str(self.config)}
        return subprocess.run(
            [sys.executable, "-m", "notifyctl.cli", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run_stdin(self, stdin: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the CLI as a real process with `stdin` on its standard input."""
        env = {**os.environ, "NOTIFYCTL_CONFIG": str(self.config)}
        return subprocess.run(
            [sys.executable, "-m", "notifyctl.cli", *args],
            cwd=self.root,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def states(self, run_id: str | None = None) -> dict[str, int]:
        with self.db() as conn:
            sql = "SELECT state, count(*) FROM deliveries"
            params: tuple[Any, ...] = ()
            if run_id:
                sql += " WHERE run_id=?"
                params = (run_id,)
            return {s: n for s, n in conn.execute(sql + " GROUP BY state", params)}


def make_workspace(
    root: Path,
    *,
    webhook: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    extra: str = "",
    top: str = "",
    channels: dict[str, str] | None = None,
    providers: dict[str, dict[str, Any]] | None = None,
) -> Workspace:
    """A workspace whose webhook provider may talk to 127.0.0.1 over plain HTTP, with fast retries."""
    shutil.copytree(REPO / "templates", root / "templates")
    lines = ['database = "notifyctl.db"', 'templates_dir = "templates"', 'unsubscribe_secret = "test-secret"', top, ""]
    all_providers: dict[str, dict[str, Any]] = {
        "outbox": {"type": "outbox", "path": "outbox", "rate": 5000, "concurrency": 8},
        "inapp": {"type": "inapp", "rate": 5000, "concurrency": 8},
        "webhook": {
            "type": "webhook",
            "rate": 5000,
            "concurrency": 16,
            "timeout_s": 2,
            "allow_hosts": ["127.0.0.1", "localhost"],
            **(webhook or {}),
        },
    }
    all_providers.update(providers or {})
    for name, conf in all_providers.items():
        lines.append(f"[providers.{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in conf.items())
        lines.append("")
    lines.append("[channels]")
    for channel, provider in (channels or {"email": "outbox", "inapp": "inapp", "webhook": "webhook"}).items():
        lines.append(f"{channel} = {toml_value(provider)}")
    lines.append("")
    lines.append("[retry]")
    for k, v in {"base_s": 0.01, "cap_s": 0.05, "max_attempts": 4, **(retry or {})}.items():
        lines.append(f"{k} = {toml_value(v)}")
    lines.append("")
    lines.append(extra)
    root.joinpath("notifyctl.toml").write_text("\n".join(lines), encoding="utf-8")
    return Workspace(root)


def users_csv(n: int, *, webhook_url: str | None = None, start: int = 1, extra_cols: Sequence[str] = ()) -> str:
    header = ["user_id", "email", "locale", "first_name", "webhook_url", "webhook_secret", *extra_cols]
    rows = [",".join(header)]
    for i in range(start, start + n):
        rows.append(
            ",".join(
                [
                    f"u{i}",
                    f"user{i}@example.com",
                    "en",
                    f"Name{i}",
                    webhook_url or "",
                    SINK_SECRET if webhook_url else "",
                    *["x"] * len(extra_cols),
                ]
            )
        )
    return "\n".join(rows) + "\n"


def audience_csv(n: int, start: int = 1) -> str:
    return "user_id,first_name\n" + "".join(f"u{i},Name{i}\n" for i in range(start, start + n))


def campaign_toml(
    campaign_id: str,
    template: str,
    channels: Sequence[str],
    audience: str,
    data: dict[str, str] | None = None,
    send_at: str | None = None,
) -> str:
    lines = [
        f"id = {toml_value(campaign_id)}",
        f"template = {toml_value(template)}",
        f"channels = {toml_value(list(channels))}",
        f"audience = {toml_value(audience)}",
    ]
    if send_at:
        lines.append(f"send_at = {toml_value(send_at)}")
    lines.append("[data]")
    for k, v in (data or {"product_name": "Acme"}).items():
        lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n"
