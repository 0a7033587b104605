"""Resume start-up: with N finished deliveries in the run (default 1,000,000), how long from
`notifyctl resume RUN` starting to its first new send (target: under 5 s).

    python bench/resume.py [--finished 1000000] [--pending 1000]

Builds the database the way a big interrupted run leaves it: a real broadcast of `pending`
users first (so rows, template versions and endpoints are genuine), then an interrupted run
holding N `sent` deliveries (with their attempt and idempotency rows, generated in SQL from
that real run's rows) and `pending` deliveries still to send. The webhook sink records
arrival times; the figure is first arrival − process start.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    http_sink,
    machine,
    make_workspace,
    run_measured,
    table,
    write_audience,
    write_campaign,
    write_users,
)

RUN = "run_bench_resume"


def build_interrupted_run(db_path: Path, finished: int) -> int:
    """Clone the one real run into RUN: `finished` sent rows plus that run's rows as pending."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    (source,) = conn.execute("SELECT run_id FROM runs ORDER BY created LIMIT 1").fetchone()
    conn.execute(
        """INSERT INTO runs (run_id, kind, campaign_id, template, template_version, category, channels,
                      state, data, audience_path, audience_sha256, plan_offset, plan_line, planned, send_at, created,
                      started, finished, options)
                    SELECT ?, kind, 'bench-resume', template, template_version, category, channels, 'interrupted',
                      data, audience_path, audience_sha256, plan_offset, plan_line, 1, NULL, created, started, NULL,
                      options FROM runs WHERE run_id=?""",
        (RUN, source),
    )
    conn.execute(
        """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                    INSERT INTO deliveries (run_id, line, user_id, channel, address, idempotency_key, event_id,
                      template, template_version, category, locale, state, attempts, provider, provider_message_id,
                      message_id, data, created, updated)
                    SELECT ?, n.i, 'old' || n.i, d.channel, d.address, printf('%032x', n.i), 'bench-resume',
                      d.template, d.template_version, d.category, d.locale, 'sent', 1, d.provider,
                      'msg_old' || n.i, 'msg_old' || n.i, d.data, d.created, d.updated
                    FROM n, (SELECT * FROM deliveries WHERE run_id=? LIMIT 1) AS d""",
        (finished, RUN, source),
    )
    conn.execute(
        """INSERT INTO attempts (delivery_id, number, started, latency_ms, outcome, provider)
                    SELECT id, 1, created, 1.0, 'sent', provider FROM deliveries WHERE run_id=?""",
        (RUN,),
    )
    conn.execute(
        """INSERT INTO idempotency (key, delivery_id, run_id, created)
                    SELECT idempotency_key, id, run_id, unixepoch() FROM deliveries WHERE run_id=?""",
        (RUN,),
    )
    pending = conn.execute(
        """INSERT INTO deliveries (run_id, line, user_id, channel, address, idempotency_key,
                                event_id, template, template_version, category, locale, state, attempts, message_id,
                                data, created, updated)
                              SELECT ?, line, user_id, channel, address, 'new' || idempotency_key, 'bench-resume',
                                template, template_version, category, locale, 'pending', 0, 'msg_new' || id, data,
                                created, updated FROM deliveries WHERE run_id=?""",
        (RUN, source),
    ).rowcount
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return pending


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notifyctl-bench-") as tmp, http_sink(prefer="aiohttp") as sink:
        root = Path(tmp)
        workspace = make_workspace(
            root,
            {"webhook": {"type": "webhook", "rate": 1_000_000.0, "concurrency": 64, "allow_hosts": ["127.0.0.1"]}},
            {"webhook": "webhook"},
        )
        write_users(root / "users.csv", args.pending, sink.url)
        write_audience(root / "audience.csv", args.pending)
        write_campaign(root / "campaign.toml", "bench-seed", ["webhook"], "audience.csv")
        workspace.run("users", "import", "users.csv").check("users import")
        workspace.run("broadcast", "campaign.toml", "--json").check("seed broadcast")
        built = time.perf_counter()
        pending = build_interrupted_run(workspace.db_path, args.finished)
        build_s = time.perf_counter() - built
        db_mb = workspace.db_path.stat().st_size / 1e6
        started = time.time()
        measured = run_measured(workspace.cmd("resume", RUN, "--json"), cwd=root, env=workspace.env())
        measured.check("resume")
        new = [t for t in sink.timestamps() if t >= started]
    if len(new) != pending:
        print(f"warning: {len(new)} of {pending} pending deliveries reached the sink", file=sys.stderr)
    first = (min(new) - started) if new else float("nan")
    print(
        f"\nresume: {args.finished:,} finished + {pending:,} pending deliveries in the run, database "
        f"{db_mb:.0f} MB (built in {build_s:.0f} s); {machine()}"
    )
    print(
        table(
            ["", "seconds"],
            [
                ["process start → first new send", f"{first:.2f}"],
                ["whole resume (to exit)", f"{measured.wall_s:.2f}"],
                ["peak RSS MB", f"{measured.max_rss_mb:.0f}"],
            ],
        )
    )
    print("target: first new send in under 5 s")


if __name__ == "__main__":
    main()
