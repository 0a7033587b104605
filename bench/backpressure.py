"""One endpoint's backpressure is that endpoint's: a broadcast where 1 % of the endpoints throttle.

    python bench/backpressure.py                               # 5,000 recipients at 1,000/s, 1 % throttling
    python bench/backpressure.py --recipients 20000 --rate 2000 --throttled-share 0.01

The sink (bench/sink.py, its own process) listens on one port for most recipients and on one port
per throttled endpoint; each of those answers its first request with 429 and `Retry-After: 2`.
Printed: the rate at which the other endpoints were sent to, as the sink saw it, against the
configured one (the target: at least 90 %), the whole run's rate (planning and the last Retry-After
included), and how long each throttled endpoint waited before it was sent to again (the target: at
least its Retry-After).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    SINK_SECRET,
    free_port,
    machine,
    make_workspace,
    stop,
    table,
    wait_port,
    write_audience,
    write_campaign,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--throttled-share", type=float, default=0.01)
    parser.add_argument("--retry-after", type=float, default=2.0)
    args = parser.parse_args()
    n, throttled = args.recipients, max(1, int(args.recipients * args.throttled_share))
    print(f"machine: {machine()}")
    port = free_port()
    while any(_in_use(p) for p in range(port + 1, port + 1 + throttled)):
        port = free_port()
    cmd = [sys.executable, str(BENCH / "sink.py"), "--port", str(port), "--status", "204"]
    cmd += ["--throttle-ports", str(throttled), "--retry-after", str(args.retry_after)]
    sink = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
        with tempfile.TemporaryDirectory(prefix="notifyctl-bench-backpressure-") as tmp:
            root = Path(tmp)
            provider = {"type": "webhook", "rate": args.rate, "burst": max(1, int(args.rate / 10)),
                        "concurrency": 64, "timeout_s": 10, "allow_hosts": ["127.0.0.1"]}  # fmt: skip
            ws = make_workspace(root, {"webhook": provider}, {"webhook": "webhook"})
            step = n // throttled
            with (root / "users.csv").open("w", encoding="utf-8") as fh:
                fh.write("user_id,email,locale,first_name,webhook_url,webhook_secret\n")
                for i in range(1, n + 1):
                    k = i // step if i % step == 0 and i // step <= throttled else 0
                    url = f"http://127.0.0.1:{port + k}/u{i}"
                    fh.write(f"u{i},user{i}@example.com,en,Name{i},{url},{SINK_SECRET}\n")
            write_audience(root / "aud.csv", n)
            write_campaign(root / "c.toml", "bench-backpressure", ["webhook"], "aud.csv")
            ws.run("users", "import", "users.csv").check("users import")
            measured = ws.run("broadcast", "c.toml", "--json", timeout_s=n / args.rate * 5 + 120)
            measured.check("broadcast")
            with sqlite3.connect(ws.db_path) as conn:
                started, finished = conn.execute("SELECT started, finished FROM runs").fetchone()
                sent = conn.execute("SELECT count(*) FROM deliveries WHERE state='sent'").fetchone()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_timestamps", timeout=30) as response:
            stamps = json.loads(response.read())
    finally:
        stop(sink)
    span = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    waits: list[float] = []
    for k in range(1, throttled + 1):
        times = sorted(t for t, p, _path in stamps if p == port + k)
        if len(times) >= 2:
            waits.append(times[1] - times[0])
    # The rate the provider's bucket kept for everyone else: the other endpoints' requests as the sink
    # received them, first to last. The whole run's rate also counts planning and the last
    # throttled endpoint's Retry-After, a fixed cost that a short run cannot amortise.
    others = sorted(t for t, p, _path in stamps if p == port)
    rate = (len(others) - 1) / (others[-1] - others[0]) if len(others) > 1 else 0.0
    whole = sent / span
    print(table(
        ["recipients", "throttled endpoints", "sent", "configured /s", "others /s", "share", "whole run /s",
         "waits ≥ Retry-After"],
        [[n, throttled, sent, f"{args.rate:,.0f}", f"{rate:,.0f}", f"{rate / args.rate:.0%}", f"{whole:,.0f}",
          f"{sum(w >= args.retry_after - 0.05 for w in waits)}/{len(waits)} (min {min(waits, default=0):.2f} s)"]],
    ))  # fmt: skip


def _in_use(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
