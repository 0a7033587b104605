"""Token-bucket accuracy: a webhook provider limited to R messages/s, measured at the sink.

    python bench/tokenbucket.py [--rate 200] [--burst 20] [--seconds 60]

Broadcasts R × seconds webhooks to the aiohttp sink (which records each POST's arrival time),
then checks the two promises from the arrival times alone: the achieved rate over the run is
within 2% of R, and no one-second window (sliding, starting at every arrival) holds more than
R + burst requests.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import http_sink, machine, make_workspace, table, write_audience, write_campaign, write_users


def max_in_window(stamps: list[float], width_s: float = 1.0) -> int:
    return max((bisect.bisect_left(stamps, t + width_s) - i for i, t in enumerate(stamps)), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    n = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory(prefix="notifyctl-bench-") as tmp, http_sink(prefer="aiohttp") as sink:
        root = Path(tmp)
        workspace = make_workspace(
            root,
            {
                "webhook": {
                    "type": "webhook",
                    "rate": args.rate,
                    "burst": args.burst,
                    "concurrency": args.concurrency,
                    "timeout_s": 10,
                    "allow_hosts": ["127.0.0.1"],
                }
            },
            {"webhook": "webhook"},
        )
        write_users(root / "users.csv", n, sink.url)
        write_audience(root / "audience.csv", n)
        write_campaign(root / "campaign.toml", "bench-bucket", ["webhook"], "audience.csv")
        workspace.run("users", "import", "users.csv").check("users import")
        measured = workspace.run("broadcast", "campaign.toml", "--json", timeout_s=args.seconds * 3 + 120)
        measured.check("broadcast")
        stamps = sorted(sink.timestamps())
    if len(stamps) < 2:
        raise SystemExit(f"the sink saw {len(stamps)} request(s)")
    span = stamps[-1] - stamps[0]
    achieved = (len(stamps) - 1) / span
    error = achieved / args.rate - 1
    peak = max_in_window(stamps)
    ceiling = args.rate + args.burst
    # The steady state, without the first second (where the full bucket is spent by design).
    steady = [t for t in stamps if t >= stamps[0] + 1.0]
    steady_rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else float("nan")
    print(
        f"\ntoken bucket: R = {args.rate:g}/s, burst {args.burst}, {n:,} messages over ~{args.seconds:g} s; {machine()}"
    )
    print(
        table(
            ["check", "measured", "limit", "ok"],
            [
                ["requests at the sink", f"{len(stamps):,}", f"{n:,}", "yes" if len(stamps) == n else "NO"],
                [
                    "achieved rate (first → last arrival)",
                    f"{achieved:.2f}/s ({error:+.2%})",
                    "R ± 2%",
                    "yes" if abs(error) <= 0.02 else "NO",
                ],
                ["steady rate (after the first second)", f"{steady_rate:.2f}/s", "-", "-"],
                [
                    "busiest one-second window",
                    f"{peak}",
                    f"≤ R + burst = {ceiling:g}",
                    "yes" if peak <= ceiling else "NO",
                ],
                [
                    "busiest window after the first second",
                    f"{max_in_window(steady)}",
                    f"≤ {ceiling:g}",
                    "yes" if max_in_window(steady) <= ceiling else "NO",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
