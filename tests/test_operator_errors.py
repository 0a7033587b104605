"""Issue 17.8: every operator error is one line with the fix and one of the README's exit codes."""

from __future__ import annotations

import ctypes
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workspace import Workspace, make_workspace, users_csv

# Linux capabilities that let root write where the permission bits say no (capability.h).
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3
_PR_CAPBSET_DROP = 24


def _as_an_ordinary_user() -> None:
    """In the child before exec: when running as root, give up the capabilities that ignore file
    permissions (dropped from the bounding set, they are not granted again at exec), so that a
    read-only folder is read-only for the test's CLI too, as it is for any operator."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli(ws: Workspace, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NOTIFYCTL_CONFIG": str(ws.config)}
    return subprocess.run(
        [sys.executable, "-m", "notifyctl.cli", *args],
        cwd=cwd or ws.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        preexec_fn=_as_an_ordinary_user,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """stderr is exactly one `error: …` line (no traceback, no crash report)."""
    assert "Traceback" not in result.stderr and "crashed" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr


@pytest.fixture
def read_only_db(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose database lives in a folder nobody may write."""
    ws = make_workspace(tmp_path / "ws", top="")
    ws.config.write_text(ws.config.read_text().replace('database = "notifyctl.db"', 'database = "db/notifyctl.db"'))
    ws.write("users.csv", users_csv(3))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    folder = ws.root / "db"
    for leftover in folder.glob("notifyctl.db-*"):  # as after a clean shutdown: the WAL checkpointed
        leftover.unlink()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        yield ws
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["users", "import", "users.csv"], id="users-import"),
        pytest.param(["runs", "list"], id="runs-list"),
        pytest.param(["suppress", "add", "email", "a@example.com"], id="suppress-add"),
    ],
)
def test_a_read_only_database_folder_is_one_line_with_the_fix(read_only_db: Workspace, args: list[str]) -> None:
    result = run_cli(read_only_db, *args)
    assert result.returncode == 2, result.stderr
    message = one_line_error(result)
    folder = read_only_db.root / "db"
    assert f"cannot write the database {folder / 'notifyctl.db'}" in message
    assert f"in {folder}, which must be writable by this user" in message
    assert not list(read_only_db.root.glob("crash-*")) and not (read_only_db.root / "notifyctl-state").exists()


def test_a_database_that_cannot_be_created_is_one_line_with_the_fix(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    ws.config.write_text(ws.config.read_text().replace('"notifyctl.db"', f'"{locked / "sub" / "n.db"}"'))
    ws.write("users.csv", users_csv(1))
    result = run_cli(ws, "users", "import", "users.csv")
    locked.chmod(0o755)
    assert result.returncode == 2
    assert f"cannot write the database {locked / 'sub' / 'n.db'}" in one_line_error(result)


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(ws, "serve", "--port", str(port))
    assert result.returncode == 2, result.stderr
    message = one_line_error(result)
    assert f"cannot listen on 127.0.0.1:{port}" in message and "pass --port N" in message
    assert not list(tmp_path.glob("crash-*")) and not (tmp_path / "notifyctl-state").exists()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = make_workspace(tmp_path)
    workspace.write("users.csv", users_csv(2))
    assert workspace.cli("users", "import", "users.csv").exit_code == 0
    return workspace


NOT_FOUND = [
    pytest.param(["suppress", "remove", "email", "nobody@example.com"], "no suppression of", id="suppress-remove"),
    pytest.param(["keys", "revoke", "nope"], "no active key named 'nope'", id="keys-revoke"),
    pytest.param(["dlq", "show", "999"], "no dead letter for delivery 999", id="dlq-show"),
    pytest.param(["dlq", "redrive", "--id", "999"], "no dead letter for delivery 999", id="dlq-redrive-id"),
    pytest.param(["dlq", "redrive", "--run", "run_nope"], "unknown run 'run_nope'", id="dlq-redrive-run"),
    pytest.param(["dlq", "purge", "--run", "run_nope"], "unknown run 'run_nope'", id="dlq-purge-run"),
    pytest.param(["runs", "show", "run_nope"], "unknown run 'run_nope'", id="runs-show"),
    pytest.param(["resume", "run_nope"], "unknown run 'run_nope'", id="resume"),
    pytest.param(["audit", "--run", "run_nope"], "unknown run 'run_nope'", id="audit-run"),
    pytest.param(["dlq", "list", "--run", "run_nope"], "unknown run 'run_nope'", id="dlq-list-run"),
    pytest.param(["users", "show", "nobody"], "unknown user 'nobody'", id="users-show"),
    pytest.param(["users", "forget", "nobody", "--yes"], "unknown user 'nobody'", id="users-forget"),
    pytest.param(["prefs", "show", "nobody"], "unknown user 'nobody'", id="prefs-show"),
    pytest.param(
        ["prefs", "set", "nobody", "--channel", "email", "--category", "marketing", "--off"],
        "unknown user 'nobody'",
        id="prefs-set",
    ),
    pytest.param(["endpoints", "show", "nobody"], "has no webhook endpoint", id="endpoints-show"),
    pytest.param(["endpoints", "enable", "nobody"], "has no webhook endpoint", id="endpoints-enable"),
    pytest.param(["endpoints", "rotate-secret", "nobody"], "has no webhook endpoint", id="endpoints-rotate"),
    pytest.param(
        ["send", "-t", "welcome", "-u", "nobody", "--data", '{"product_name": "A"}'], "unknown user", id="send"
    ),
    pytest.param(["templates", "render", "nope", "--channel", "email"], "nope", id="templates-render"),
]


@pytest.mark.parametrize(("args", "says"), NOT_FOUND)
def test_not_found_is_exit_2_everywhere(ws: Workspace, args: list[str], says: str) -> None:
    result = ws.cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert says in result.stderr


def test_users_forget_without_a_terminal_and_without_yes_refuses(ws: Workspace) -> None:
    result = run_cli(ws, "users", "forget", "u1")  # stdin is not a terminal: nobody to answer a prompt
    assert result.returncode == 2
    message = one_line_error(result)
    assert "--yes" in message and "nothing was erased" in message
    assert ws.cli("users", "show", "u1").exit_code == 0  # still there
    assert run_cli(ws, "users", "forget", "u1", "--yes").returncode == 0
    assert ws.cli("users", "show", "u1").exit_code == 2
