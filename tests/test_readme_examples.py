"""Every example in the README runs, as written, in a workspace made by `notifyctl init`.

What counts as an example:
- every command line of a ```sh block (lines ending in `\\` are joined; comment lines and blank
  lines are not commands; a crontab line's schedule, `* * * * *` or `@daily`, is dropped);
- every `notifyctl …` code span in the example column (the second) of the tables under
  "## Commands" whose first column names a command (a `\\|` there is a pipe; a crontab line in the
  cell as above).

How they run:
- The workspace: `notifyctl init` in an empty directory, then the README's start (`users import
  campaigns/example-users.csv`, `broadcast campaigns/welcome.toml`): five example users (u-1001 to
  u-1005, u-1001 with a webhook endpoint), one completed run. Files an operator would bring are
  made there too: `client.pem` and `client.key` (a self-signed certificate and its key).
- `notifyctl` is this checkout's, run by this test's Python; stdin is empty, HOME and the XDG
  directories are empty folders of the test, and no NOTIFYCTL_* variable is set.
- The Commands table's examples run one after another in the workspace itself, in README order
  (so `keys create` comes before `keys revoke`); each ```sh block runs as one bash script, from the
  root of a fresh copy of the workspace (so `cd` and files it makes stay in that block).
- Placeholders: `RUN_ID` is the workspace's run (see SUBSTITUTIONS to add more).
- Each example must exit 0, or the code EXIT_CODES gives it with the reason (the README's exit
  codes: 1 problems found, 2 bad usage, input or not found).

Marking an example that cannot run here (it needs a server elsewhere, credentials, minutes):
- a ```sh block: an HTML comment right before it, `<!-- not run: REASON -->`, where REASON names
  the test (or the file) that runs it instead, e.g. `tests/test_cluster_run.py`;
- a table example: an entry in NOT_RUN below, with the same kind of reason.
A marker naming no existing file, or an entry in NOT_RUN or EXIT_CODES that the README no longer
has, fails `test_the_markers_are_kept_honest`.

A failure names the README line, the command as run, its exit code and the end of its output.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.workspace import REPO

README = REPO / "README.md"

# Table examples that cannot run as written here, and the test that runs them instead.
NOT_RUN: dict[str, str] = {
    "notifyctl worker --redis redis://10.0.0.5:6379/0 --channel email --concurrency 64": (
        "a worker on a Redis server elsewhere; tests/test_cluster_run.py runs workers on a local redis-server"
    ),
    "notifyctl cluster status --redis redis://10.0.0.5:6379/0 --json": (
        "a Redis server elsewhere; tests/test_cluster_parts.py runs `cluster status --json` on a local redis-server"
    ),
    "notifyctl --config /srv/notify/notifyctl.toml resume --due": (
        "a configuration at /srv/notify; tests/test_discovery.py runs `--config FILE resume --due` from $HOME"
    ),
    "notifyctl consume --kafka kafka-1.internal:9092 --topic notification.events --group notifyctl": (
        "a Kafka broker elsewhere; tests/test_kafka_consume.py runs `notifyctl consume` on a local Tansu broker"
    ),
    "notifyctl serve --host 0.0.0.0 --port 8080": (
        "a long-lived server on every interface; tests/test_server_cli.py runs `notifyctl serve` and stops it"
    ),
}

# Examples whose documented outcome is not exit 0.
EXIT_CODES: dict[str, tuple[int, str]] = {
    "notifyctl dlq show 1234": (2, "not found: the workspace has no dead letter 1234"),
    "notifyctl runs cancel RUN_ID --json": (2, "the workspace's one run is completed: nothing to cancel"),
}

# Placeholders in examples, and what they become in the workspace ({run_id}: its run).
SUBSTITUTIONS: dict[str, str] = {"RUN_ID": "{run_id}"}

_NOT_RUN_MARK = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")
_CRON = re.compile(r"^(?:@\w+|(?:[\d*/,-]+\s+){4}[\d*/,-]+)\s+(?=\S)")
_SPAN = re.compile(r"`([^`]+)`")
_URL_HOST = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?(\[[^\]]*\]|[^/\s:?#]+)", re.IGNORECASE)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
LONG_LIVED = re.compile(r"\bnotifyctl\b(?:\s+-\S+(?:\s+[^-\s]\S*)?)*\s+(serve|consume|worker)\b")


@dataclass(frozen=True)
class Example:
    line: int  # 1-based, in README.md
    command: str
    block: int | None = None  # the ```sh block it is in (by its fence's line), or None: a table cell
    not_run: str | None = None  # the reason, for a marked block

    def where(self) -> str:
        return f"README.md:{self.line}"


def strip_cron(command: str) -> str:
    """`* * * * * notifyctl resume --due` → `notifyctl resume --due`."""
    return _CRON.sub("", command, count=1) if "notifyctl" in command else command


def sh_examples(lines: list[str]) -> list[Example]:
    """The command lines of the ```sh blocks, with their block and its `not run` reason."""
    examples: list[Example] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```sh":
            i += 1
            continue
        fence = i + 1
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marked = _NOT_RUN_MARK.search(before)
        i += 1
        pending: list[str] = []
        start = 0
        while i < len(lines) and lines[i].strip() != "```":
            text = lines[i].rstrip()
            if not pending:
                start = i + 1
            if text.endswith("\\"):
                pending.append(text[:-1])
            else:
                command = " ".join([*pending, text]).strip()
                pending = []
                if command and not command.startswith("#"):
                    examples.append(Example(start, strip_cron(command), fence, marked.group(1) if marked else None))
            i += 1
        i += 1
    return examples


def table_examples(lines: list[str]) -> list[Example]:
    """The `notifyctl …` spans of the example column of the Commands section's tables."""
    examples: list[Example] = []
    in_commands = False
    for number, line in enumerate(lines, start=1):
        if line.startswith("## "):
            in_commands = line.strip() == "## Commands"
        if not in_commands or not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) < 2:
            continue
        for span in _SPAN.findall(cells[1]):
            command = strip_cron(span.replace("\\|", "|").strip())
            if command.startswith("notifyctl ") or "| notifyctl " in command:
                examples.append(Example(number, command))
    return examples


def readme_examples() -> list[Example]:
    lines = README.read_text(encoding="utf-8").splitlines()
    return sh_examples(lines) + table_examples(lines)


# --- the workspace ---------------------------------------------------------------------------------


@dataclass
class Shell:
    """Runs README commands with this checkout's `notifyctl` first on PATH."""

    env: dict[str, str]

    @classmethod
    def make(cls, root: Path) -> Shell:
        bin_dir = root / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "notifyctl"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m notifyctl.cli "$@"\n', encoding="utf-8")
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        home = root / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYCTL_")}
        env.update(
            PATH=os.pathsep.join([str(bin_dir), env.get("PATH", "")]),
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_STATE_HOME=str(home / ".local" / "state"),
            NO_COLOR="1",
            COLUMNS="200",
        )
        return cls(env)

    def run(self, script: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-o", "pipefail", "-c", script],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def write_client_certificate(folder: Path) -> None:
    """client.pem and client.key, as the operator of an mTLS endpoint would bring them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notifyctl client")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "client.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def make_workspace(shell: Shell, root: Path) -> dict[str, str]:
    """`notifyctl init` and the README's start in `root`; returns the values of the placeholders."""
    root.mkdir()
    setup = shell.run(
        "notifyctl init >/dev/null && notifyctl users import campaigns/example-users.csv >/dev/null"
        " && notifyctl broadcast campaigns/welcome.toml --json",
        root,
    )
    assert setup.returncode == 0, f"the workspace could not be made:\n{setup.stdout}\n{setup.stderr}"
    write_client_certificate(root)
    return {"run_id": orjson.loads(setup.stdout)["run_id"]}


def as_run(command: str, values: dict[str, str]) -> str:
    for placeholder, value in SUBSTITUTIONS.items():
        command = re.sub(rf"\b{placeholder}\b", value.format(**values), command)
    return command


def tail(text: str, lines: int = 12) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def refused(example: Example, command: str) -> str | None:
    """Why an example may not run here at all: it would reach another machine (only this one's
    addresses are ever a target), or never end."""
    remote = [host for host in _URL_HOST.findall(command) if host.lower() not in LOCAL_HOSTS]
    if remote:
        return (
            f"{example.where()}: `{command}` names another machine ({', '.join(remote)}): not run; mark it "
            "`<!-- not run: REASON -->` (a block) or list it in NOT_RUN (a table example), or substitute a local URL"
        )
    if LONG_LIVED.search(command):
        return f"{example.where()}: `{command}` runs until stopped: not run; mark it or list it in NOT_RUN"
    return None


def judge(example: Example, command: str, code: int, stdout: str, stderr: str) -> str | None:
    """A failure message naming the README line, or None."""
    expected, why = EXIT_CODES.get(example.command, (0, ""))
    if code == expected:
        return None
    wanted = f"{expected} ({why})" if why else str(expected)
    return (
        f"{example.where()}: `{command}` exited {code}, expected {wanted}\n"
        f"  stdout:\n{tail(stdout)}\n  stderr:\n{tail(stderr)}"
    )


def run_block(shell: Shell, examples: list[Example], base: Path, copy: Path, values: dict[str, str]) -> list[str]:
    """One ```sh block as one bash script in a copy of the workspace; each command's exit code and
    output are kept apart."""
    reasons = [reason for example in examples if (reason := refused(example, as_run(example.command, values)))]
    if reasons:
        return reasons
    shutil.copytree(base, copy)
    out = copy.parent / f"{copy.name}-out"
    out.mkdir()
    script = []
    for n, example in enumerate(examples):
        script.append(f'{{ {as_run(example.command, values)}\n}} >"{out}/{n}.out" 2>"{out}/{n}.err" </dev/null')
        script.append(f'echo $? >"{out}/{n}.rc"')
    shell.run("\n".join(script), copy)
    failures = []
    for n, example in enumerate(examples):
        rc_file = out / f"{n}.rc"
        if not rc_file.exists():
            failures.append(f"{example.where()}: `{example.command}` never ran (the block stopped before it)")
            continue
        failure = judge(
            example,
            as_run(example.command, values),
            int(rc_file.read_text()),
            (out / f"{n}.out").read_text(errors="replace"),
            (out / f"{n}.err").read_text(errors="replace"),
        )
        if failure:
            failures.append(failure)
    return failures


# --- the tests -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_readme_example_runs_as_written(tmp_path: Path) -> None:
    shell = Shell.make(tmp_path)
    base = tmp_path / "workspace"
    values = make_workspace(shell, base)
    examples = readme_examples()
    assert len(examples) > 30, "the README's examples were not found"
    failures: list[str] = []
    ran = 0

    blocks: dict[int, list[Example]] = {}
    for example in examples:
        if example.block is not None and example.not_run is None:
            blocks.setdefault(example.block, []).append(example)
    for fence, block in blocks.items():
        failures += run_block(shell, block, base, tmp_path / f"block-{fence}", values)
        ran += len(block)

    for example in examples:
        if example.block is not None or example.command in NOT_RUN:
            continue
        command = as_run(example.command, values)
        reason = refused(example, command)
        if reason:
            failures.append(reason)
            continue
        result = shell.run(command, base, timeout=120)
        ran += 1
        failure = judge(example, command, result.returncode, result.stdout, result.stderr)
        if failure:
            failures.append(failure)

    assert not failures, f"{len(failures)} of {ran} README examples failed:\n\n" + "\n\n".join(failures)


def test_the_markers_are_kept_honest() -> None:
    examples = readme_examples()
    commands = {example.command for example in examples}
    stale = [command for command in [*NOT_RUN, *EXIT_CODES] if command not in commands]
    assert not stale, f"tests/test_readme_examples.py lists examples the README no longer has: {stale}"
    for example in examples:
        reason = example.not_run if example.block is not None else NOT_RUN.get(example.command)
        if reason is None:
            continue
        named = re.findall(r"[\w.-]*/[\w./-]*\w", reason)
        assert any((REPO / path).exists() for path in named), (
            f"{example.where()}: the reason it is not run names no file that runs it instead: {reason!r}"
        )


@pytest.mark.parametrize(
    ("command", "runs"),
    [
        pytest.param("notifyctl cluster status --redis redis://10.0.0.5:6379/0", False, id="private-address"),
        pytest.param("notifyctl worker --redis redis://127.0.0.1:6379/0", False, id="long-lived"),
        pytest.param("notifyctl --config x.toml serve --port 8080", False, id="serve"),
        pytest.param("curl -s https://notify.acme.io/healthz", False, id="public-address"),
        pytest.param("notifyctl --redis redis://localhost:6379 broadcast c.toml", True, id="local"),
        pytest.param("notifyctl runs list --limit 20", True, id="plain"),
    ],
)
def test_examples_that_would_leave_this_machine_or_never_end_are_not_run(command: str, runs: bool) -> None:
    assert (refused(Example(1, command), command) is None) is runs


def test_the_harness_reads_blocks_tables_and_crontab_lines() -> None:
    text = [
        "## Commands",
        "| `resume` | `notifyctl resume RUN_ID`; from cron: `* * * * * notifyctl resume --due` |",
        "| `send --events` | `cat e.jsonl \\| notifyctl send --events -` (lines: `{...}`) |",
        "",
        "<!-- not run: see tests/test_install.py -->",
        "```sh",
        "notifyctl a \\",
        "  --b   # c",
        "# a comment",
        "```",
        "```sh",
        "@daily notifyctl resume --due",
        "```",
    ]
    found = sh_examples(text) + table_examples(text)
    assert [(e.line, e.command, e.not_run) for e in found] == [
        (7, "notifyctl a    --b   # c", "see tests/test_install.py"),
        (12, "notifyctl resume --due", None),
        (2, "notifyctl resume RUN_ID", None),
        (2, "notifyctl resume --due", None),
        (3, "cat e.jsonl | notifyctl send --events -", None),
    ]
