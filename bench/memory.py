"""Memory flat in the audience size: peak RSS of a broadcast to 1,000,000 recipients against one
to 100,000 (targets: at most 150 MB, and within 15% of the smaller run).

    python bench/memory.py [--small 100000] [--large 1000000] [--channel webhook|email-outbox|inapp] [--processes 1]

Each size runs in its own workspace (users imported first, not counted); the broadcast's peak
RSS is the child's ru_maxrss from wait4(). email-outbox writes one .eml per message into the
temp workspace (about 1.5 KB each); webhook posts to the local sink.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broadcast import broadcast, prepare, sinks, states
from common import machine, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--channel", choices=["email-outbox", "webhook", "inapp"], default="webhook")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="sender processes (NOTIFYCTL_PROCESSES; default 1: the peak is then the whole broadcast's; "
        "with more, ru_maxrss is the largest single process's)",
    )
    args = parser.parse_args()
    rows = []
    peaks = []
    for n in (args.small, args.large):
        with tempfile.TemporaryDirectory(prefix="notifyctl-bench-") as tmp, sinks(args.channel, "nginx") as sink:
            url, smtp_port, _ = sink
            print(f"{n:,} recipients: importing users…", file=sys.stderr)
            workspace, imported = prepare(Path(tmp), args.channel, n, args.concurrency, url, smtp_port)
            print(f"{n:,} recipients: broadcasting…", file=sys.stderr)
            measured = broadcast(workspace, args.processes)
            sent = states(workspace).get("sent", 0)
        peaks.append(measured.max_rss_mb)
        rows.append(
            [
                f"{n:,}",
                f"{sent:,}",
                f"{measured.wall_s:.1f}",
                f"{sent / measured.wall_s:,.0f}",
                f"{measured.max_rss_mb:.0f}",
                f"{imported.max_rss_mb:.0f}",
            ]
        )
    growth = peaks[1] / peaks[0] - 1
    print(f"\nmemory: broadcast peak RSS by audience size, channel {args.channel}; {machine()}")
    print(table(["recipients", "sent", "wall s", "msg/s", "broadcast peak RSS MB", "users import peak RSS MB"], rows))
    print(
        f"large vs small: {growth:+.1%} (target: within 15%, and at most 150 MB) → "
        f"{'ok' if abs(growth) <= 0.15 and peaks[1] <= 150 else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
