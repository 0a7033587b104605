"""Sender processes for one run: one per shard of the outbox (delivery id modulo N).

Python sends from one core per process; `processes = N` in notifyctl.toml lets a broadcast or resume
use N. The parent plans and sends shard 0; each child runs the same engine on the local backend for
shard k (`LocalBackend(shard=(k, N), follows=True)`), at 1/N of every provider's rate, through its
own ledger connection, so intent-before-call and outcome-after still hold row by row. A process
whose shard is done takes on the others' never-attempted rows; every intent is a claim.
A child dies with its parent (PR_SET_PDEATHSIG), so a kill -9 of the parent leaves in-flight rows for
`resume` to mark in doubt, exactly as with one process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

from notifyctl.settings import Settings

PR_SET_PDEATHSIG = 1


async def spawn(
    settings: Settings, run_id: str, processes: int, allow_template_change: bool
) -> list[asyncio.subprocess.Process]:
    """Start the sibling senders of shards 1..processes-1."""
    args = [
        sys.executable,
        "-m",
        "notifyctl.backends.processes",
        run_id,
        "--processes",
        str(processes),
        "--parent",
        str(os.getpid()),
    ]
    if settings.source != "(embedded defaults)":
        args += ["--config", str(Path(settings.source).resolve())]
    if allow_template_change:
        args.append("--allow-template-change")
    args += _log_args()
    return [
        await asyncio.create_subprocess_exec(
            *args, "--shard", str(k), cwd=settings.base_dir, stdin=asyncio.subprocess.DEVNULL
        )
        for k in range(1, processes)
    ]


def _log_args() -> list[str]:
    """The parent's log destination (--log-file, -v), for the siblings to write their lines to."""
    from notifyctl.logs import destination

    found = destination()
    if found is None:
        return []
    level, path = found
    return ["--log-level", level, *(["--log-file", str(path)] if path is not None else [])]


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


async def _main(args: argparse.Namespace) -> int:
    from notifyctl.backends.local import LocalBackend
    from notifyctl.pipeline.engine import Engine
    from notifyctl.settings import load_settings
    from notifyctl.store.db import connect
    from notifyctl.templates.store import TemplateStore

    settings = load_settings(Path(args.config) if args.config else None)
    if args.log_level is not None:  # the parent logs: so does this process, to the same place
        from notifyctl.logs import configure_logging
        from notifyctl.security.redaction import configured_secrets

        configure_logging(args.log_level, args.log_file, configured_secrets(settings))
    conn = connect(settings.database_path)
    templates = TemplateStore(settings.templates_path, render_timeout_s=settings.render_timeout_s)
    backend = LocalBackend(shard=(args.shard, args.processes), follows=True)
    engine = Engine(settings, conn, templates, backend=backend)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, engine.stop)
    try:
        await engine.run(args.run_id, allow_template_change=args.allow_template_change)
    finally:
        conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notifyctl.backends.processes")
    parser.add_argument("run_id")
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--config")
    parser.add_argument("--allow-template-change", action="store_true")
    parser.add_argument("--log-level", default=None)
    parser.add_argument("--log-file", type=Path, default=None)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    from notifyctl import aio

    return aio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
