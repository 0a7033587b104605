"""End-to-end broadcast throughput: notifyctl against Apprise and a plain aiohttp POST loop.

    python bench/broadcast.py --recipients 100000                      # webhook to a local nginx
    python bench/broadcast.py --recipients 100000 --channel email-outbox
    python bench/broadcast.py --recipients 20000 --channel email-smtp   # to an aiosmtpd sink
    python bench/broadcast.py --recipients 100000 --profile /tmp/prof  # under py-spy (bench/.venv)

It starts its own sink in a separate process (nginx with one worker and no access log if it is
installed, else bench/sink.py), builds a throw-away workspace (users, audience, campaign,
webhook provider allowed to reach 127.0.0.1), runs `notifyctl users import` and then
`notifyctl broadcast` as child processes and reads their wall time, CPU and peak RSS from the OS
(wait4). On the webhook channel it then runs the peers against the same sink: Apprise's Python
API (one notify() per message, in bench/.venv) and a plain aiohttp POST loop (keep-alive, a fixed
number of workers). Every figure comes from the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    Measured,
    Workspace,
    bench_python,
    http_sink,
    machine,
    make_workspace,
    run_measured,
    smtp_sink,
    table,
    write_audience,
    write_campaign,
    write_users,
)

CHANNELS = ("webhook", "email-outbox", "email-smtp", "inapp")
HIGH_RATE = 1_000_000.0


@dataclass
class Row:
    name: str
    messages: int
    measured: Measured
    loop_s: float | None = None  # the sending loop alone, as the process itself reports it

    @property
    def rate(self) -> float:
        return self.messages / self.measured.wall_s

    @property
    def cpu_per_1000(self) -> float:
        return self.measured.cpu_s / self.messages * 1000


@contextmanager
def workspace_dir(keep: bool) -> Iterator[Path]:
    if keep:
        yield Path(tempfile.mkdtemp(prefix="notifyctl-bench-"))
        return
    with tempfile.TemporaryDirectory(prefix="notifyctl-bench-") as tmp:
        yield Path(tmp)


def provider_config(
    channel: str, concurrency: int, smtp_port: int | None
) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    if channel == "webhook":
        return (
            {
                "webhook": {
                    "type": "webhook",
                    "rate": HIGH_RATE,
                    "concurrency": concurrency,
                    "timeout_s": 10,
                    "allow_hosts": ["127.0.0.1"],
                }
            },
            {"webhook": "webhook"},
        )
    if channel == "email-outbox":
        return (
            {
                "outbox": {
                    "type": "outbox",
                    "path": "outbox",
                    "rate": HIGH_RATE,
                    "concurrency": concurrency,
                    "from_address": "Acme <notifications@example.com>",
                }
            },
            {"email": "outbox"},
        )
    if channel == "email-smtp":
        return (
            {
                "smtp": {
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp_port or 25,
                    "rate": HIGH_RATE,
                    "concurrency": concurrency,
                    "pool_size": concurrency,
                    "start_tls": False,
                    "from_address": "Acme <notifications@example.com>",
                }
            },
            {"email": "smtp"},
        )
    if channel == "inapp":
        return ({"inapp": {"type": "inapp", "rate": HIGH_RATE, "concurrency": concurrency}}, {"inapp": "inapp"})
    raise SystemExit(f"unknown channel {channel}")


@contextmanager
def sinks(channel: str, prefer: str) -> Iterator[tuple[str | None, int | None, str]]:
    """(webhook URL, SMTP port, sink description) for the channel, stopped on exit."""
    with ExitStack() as stack:
        if channel == "webhook":
            sink = stack.enter_context(http_sink(prefer))
            yield sink.url, None, sink.kind
        elif channel == "email-smtp":
            yield None, stack.enter_context(smtp_sink()), "aiosmtpd"
        else:
            yield None, None, "-"


def prepare(
    root: Path, channel: str, recipients: int, concurrency: int, url: str | None, smtp_port: int | None
) -> tuple[Workspace, Measured]:
    """A workspace with `recipients` users imported and a campaign to all of them."""
    providers, channels = provider_config(channel, concurrency, smtp_port)
    workspace = make_workspace(root, providers, channels)
    write_users(root / "users.csv", recipients, url)
    write_audience(root / "audience.csv", recipients)
    write_campaign(root / "campaign.toml", "bench-1", [next(iter(channels))], "audience.csv")
    imported = workspace.run("users", "import", "users.csv").check("users import")
    return workspace, imported


def states(workspace: Workspace) -> dict[str, int]:
    with sqlite3.connect(workspace.db_path) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())


def run_elapsed(workspace: Workspace) -> float | None:
    """The run's own elapsed time (started → finished), without process start-up."""
    with sqlite3.connect(workspace.db_path) as conn:
        row = conn.execute(
            "SELECT (julianday(finished) - julianday(started)) * 86400 FROM runs ORDER BY created DESC LIMIT 1"
        ).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def broadcast(workspace: Workspace, processes: int, profile: Path | None = None, rate_hz: int = 100) -> Measured:
    cmd = workspace.cmd("broadcast", "campaign.toml", "--json")
    env = {**workspace.env(), "NOTIFYCTL_PROCESSES": str(processes)}
    if profile is not None:
        py_spy = bench_python().parent / "py-spy"
        cmd = [
            str(py_spy),
            "record",
            "--format",
            "raw",
            "--rate",
            str(rate_hz),
            "--threads",
            "--nonblocking",
            *(["--subprocesses"] if processes > 1 else []),
            "-o",
            str(profile),
            "--",
            *cmd,
        ]
    return run_measured(cmd, cwd=workspace.root, env=env).check("broadcast")


def peer(name: str, url: str, n: int, workers: int) -> Row:
    python = str(bench_python()) if name == "apprise" else sys.executable
    measured = run_measured(
        [python, str(BENCH / "peers.py"), name, url, str(n), "--workers", str(workers)], timeout_s=900
    ).check(name)
    report = json.loads(measured.stdout.strip().splitlines()[-1])
    if report["failed"]:
        print(f"warning: {name}: {report['failed']} of {n} failed", file=sys.stderr)
    label = "Apprise (Python API)" if name == "apprise" else f"aiohttp POST loop ({workers} workers)"
    return Row(label, report["sent"], measured, report["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--channel", choices=CHANNELS, default="webhook")
    parser.add_argument("--concurrency", type=int, default=64, help="provider concurrency (workers, connections)")
    parser.add_argument(
        "--sink",
        choices=["nginx", "aiohttp"],
        default="nginx",
        help="nginx if installed (default), else the aiohttp sink",
    )
    parser.add_argument("--apprise-messages", type=int, default=5000)
    parser.add_argument("--loop-messages", type=int, default=0, help="default: as many as recipients")
    parser.add_argument("--loop-workers", type=int, default=64)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--profile", type=Path, help="write py-spy raw (collapsed) stacks of the broadcast here")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (its path is printed)")
    parser.add_argument(
        "--processes",
        default="1,2",
        help="sender processes for notifyctl (NOTIFYCTL_PROCESSES), comma-separated: one broadcast each, "
        "each in a fresh workspace (default: 1,2)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds: every contender runs once per round (interleaved, so that a noisy moment on the machine "
        "does not fall on one of them only); the table shows each one's best round and all rounds' msg/s",
    )
    args = parser.parse_args()
    process_counts = [int(n) for n in args.processes.split(",")]

    runs: dict[str, list[Row]] = {}
    with workspace_dir(args.keep) as top, sinks(args.channel, args.sink) as (url, smtp_port, sink_kind):
        print(f"machine: {machine()}", file=sys.stderr)
        for round_ in range(1, args.repeat + 1):
            for processes in process_counts:
                root = top / f"round-{round_}-processes-{processes}"
                root.mkdir()
                print(f"workspace: {root}; sink: {sink_kind}; importing {args.recipients:,} users…", file=sys.stderr)
                workspace, imported = prepare(root, args.channel, args.recipients, args.concurrency, url, smtp_port)
                print(
                    f"users import: {imported.wall_s:.1f} s; broadcasting with {processes} process(es)…",
                    file=sys.stderr,
                )
                measured = broadcast(workspace, processes, args.profile)
                counts = states(workspace)
                sent = counts.get("sent", 0)
                if sent != args.recipients:
                    print(f"warning: states after the broadcast: {counts}", file=sys.stderr)
                label = f"notifyctl broadcast ({args.channel}, {processes} process{'es' if processes > 1 else ''})"
                runs.setdefault(label, []).append(Row(label, sent, measured, run_elapsed(workspace)))
                if not args.keep:
                    shutil.rmtree(root)
            if url and not args.no_peers:
                print(f"peers (round {round_} of {args.repeat})…", file=sys.stderr)
                for row in (
                    peer("postloop", url, args.loop_messages or args.recipients, args.loop_workers),
                    peer("apprise", url, args.apprise_messages, 1),
                ):
                    runs.setdefault(row.name, []).append(row)

    rows = [max(rounds, key=lambda r: r.rate) for rounds in runs.values()]
    ours_rows = [r for r in rows if r.name.startswith("notifyctl")]
    ours = max(r.rate for r in ours_rows)
    print(
        f"\n{args.recipients:,} recipients, channel {args.channel}, sink {sink_kind}, "
        f"concurrency {args.concurrency}; {machine()}"
    )
    print(
        table(
            [
                "",
                "messages",
                "wall s",
                "msg/s (wall)",
                "msg/s (loop)",
                "best notifyctl ÷ this",
                "peak RSS MB",
                "CPU s / 1000",
                "msg/s (wall) of each round",
            ],
            [
                [
                    r.name,
                    f"{r.messages:,}",
                    f"{r.measured.wall_s:.2f}",
                    f"{r.rate:,.0f}",
                    f"{r.messages / r.loop_s:,.0f}" if r.loop_s else "-",
                    f"{ours / r.rate:.2f}×",
                    f"{r.measured.max_rss_mb:.0f}",
                    f"{r.cpu_per_1000:.3f}",
                    " ".join(f"{x.rate:,.0f}" for x in runs[r.name]),
                ]
                for r in rows
            ],
        )
    )
    print(
        "msg/s (wall): the whole process, start-up included; msg/s (loop): notifyctl's run (started → "
        "finished in the runs table) or the peer's sending loop alone. Each row is its best of "
        f"{args.repeat} round(s)."
    )
    print(f"users import ({args.recipients:,}): {imported.wall_s:.2f} s, peak RSS {imported.max_rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
