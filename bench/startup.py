"""Start-up cost: `notifyctl --help` (target < 0.3 s) and a one-off in-app `send` (target < 0.6 s).

    python bench/startup.py [--runs 10]

Uses hyperfine when it is installed (warm-up runs, statistics); else runs each command `runs`
times in a loop after one warm-up. Also lists the heavy SDK modules that an in-app send imported
(none should be: aioboto3, twilio, firebase_admin load only when their provider is used).

With PYTHONDONTWRITEBYTECODE set (as in some sandboxes) and an editable install, every notifyctl
module is compiled from source at every start (~40 modules, ~100 ms). --bytecode-cache measures
as an installed package runs instead: bytecode is cached (in the temporary workspace, via
PYTHONPYCACHEPREFIX, never in the source tree) by the warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, make_workspace, median, notifyctl_python, table

HEAVY = ("aioboto3", "boto3", "botocore", "twilio", "firebase_admin", "google.auth", "aiosmtplib", "aiohttp")


def loop_times(cmd: list[str], cwd: Path, env: dict[str, str], runs: int) -> list[float]:
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True, timeout=60)  # warm the page cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True, timeout=60)
        times.append(time.perf_counter() - started)
    return times


def hyperfine_times(cmd: list[str], cwd: Path, env: dict[str, str], runs: int, hyperfine: str) -> list[float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [
                hyperfine,
                "--warmup",
                "1",
                "--runs",
                str(runs),
                "--export-json",
                out.name,
                "--style",
                "none",
                shlex.join(cmd),
            ],
            cwd=cwd,
            env=env,
            capture_output=True,
            check=True,
            timeout=600,
        )
        times: list[float] = json.loads(Path(out.name).read_text())["results"][0]["times"]
        return times


def imported_heavy(cmd: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """Top-level packages from HEAVY that the command imported (python -X importtime)."""
    result = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    return sorted(h for h in HEAVY if h in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--bytecode-cache", action="store_true", help="cache compiled modules, as an installed package does"
    )
    args = parser.parse_args()
    hyperfine = shutil.which("hyperfine")
    with tempfile.TemporaryDirectory(prefix="notifyctl-bench-") as tmp:
        root = Path(tmp)
        workspace = make_workspace(root, {"inapp": {"type": "inapp"}}, {"inapp": "inapp"})
        (root / "users.csv").write_text("user_id,email,first_name\nu1,ada@example.com,Ada\n")
        workspace.run("users", "import", "users.csv").check("users import")
        python = notifyctl_python()
        commands = {
            "notifyctl --help": ([python, "-m", "notifyctl.cli", "--help"], 0.3),
            "notifyctl send (in-app, one user)": (
                [
                    python,
                    "-m",
                    "notifyctl.cli",
                    "send",
                    "-t",
                    "welcome",
                    "-u",
                    "u1",
                    "--channel",
                    "inapp",
                    "--data",
                    '{"product_name": "Acme"}',
                    "--json",
                ],
                0.6,
            ),
        }
        env = workspace.env()
        if args.bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        rows = []
        for label, (cmd, target) in commands.items():
            times = (
                hyperfine_times(cmd, root, env, args.runs, hyperfine)
                if hyperfine
                else loop_times(cmd, root, env, args.runs)
            )
            heavy = imported_heavy(cmd, root, env)
            rows.append(
                [
                    label,
                    f"{min(times):.3f}",
                    f"{median(times):.3f}",
                    f"{max(times):.3f}",
                    f"< {target}",
                    "yes" if median(times) < target else "NO",
                    ", ".join(heavy) or "-",
                ]
            )
    bytecode = (
        "bytecode cached" if args.bytecode_cache or "PYTHONDONTWRITEBYTECODE" not in os.environ else "no bytecode cache"
    )
    print(f"\nstart-up, {args.runs} runs each ({'hyperfine' if hyperfine else 'loop'}, {bytecode}); {machine()}")
    print(table(["command", "min s", "median s", "max s", "target", "ok", "heavy modules imported"], rows))


if __name__ == "__main__":
    main()
