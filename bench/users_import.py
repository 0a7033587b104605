"""`notifyctl users import` of N users (default 1,000,000; target: under 30 s).

    python bench/users_import.py [--users 1000000] [--again]

Generates a CSV (user_id, email, locale, first_name, webhook_url, webhook_secret) in a temp
workspace, imports it into an empty database as a child process and prints wall time, users/s,
CPU and peak RSS. --again imports the same file a second time (every row an update).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, make_workspace, table, write_users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--again", action="store_true", help="import the same file twice (updates)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notifyctl-bench-") as tmp:
        root = Path(tmp)
        workspace = make_workspace(
            root, {"webhook": {"type": "webhook", "allow_hosts": ["127.0.0.1"]}}, {"webhook": "webhook"}
        )
        users = root / "users.csv"
        write_users(users, args.users, "http://127.0.0.1:9/hook")
        size_mb = users.stat().st_size / 1e6
        rows = []
        for label in ["import (new users)", *(["import again (updates)"] if args.again else [])]:
            measured = workspace.run("users", "import", "users.csv", timeout_s=3600).check("users import")
            rows.append(
                [
                    label,
                    f"{args.users:,}",
                    f"{measured.wall_s:.2f}",
                    f"{args.users / measured.wall_s:,.0f}",
                    f"{measured.cpu_s:.1f}",
                    f"{measured.max_rss_mb:.0f}",
                ]
            )
        with sqlite3.connect(workspace.db_path) as conn:
            stored = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        if stored != args.users:
            raise SystemExit(f"expected {args.users} users in the database, found {stored}")
    print(f"\nusers import: {args.users:,} users, CSV {size_mb:.0f} MB; {machine()}")
    print(table(["", "users", "wall s", "users/s", "CPU s", "peak RSS MB"], rows))
    print("target: 1,000,000 users in under 30 s")


if __name__ == "__main__":
    main()
