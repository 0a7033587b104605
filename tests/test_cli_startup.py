"""Start-up of a one-off send: no module it does not need, the app built once, one command built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from notifyctl.cli import app, output, startup
from tests.workspace import Workspace, make_workspace

HEAVY = ("rich", "aioboto3", "boto3", "botocore", "twilio", "firebase_admin", "aiosmtplib", "aiohttp", "redis")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = make_workspace(tmp_path, channels={"inapp": "inapp"})
    workspace.write("users.csv", "user_id,email,first_name\nu1,ada@example.com,Ada\n")
    assert workspace.cli("users", "import", "users.csv").exit_code == 0
    return workspace


def _imported(ws: Workspace, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = {**os.environ, "NOTIFYCTL_CONFIG": str(ws.config)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "notifyctl.cli", *args],
        cwd=ws.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return done, names


def test_an_in_app_send_imports_neither_rich_nor_an_sdk_and_builds_the_app_once(ws: Workspace) -> None:
    done, names = _imported(
        ws, "send", "-t", "welcome", "-u", "u1", "--channel", "inapp", "--data", '{"product_name": "Acme"}', "--json"
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert '"sent": 1' in done.stdout
    assert not [name for name in names if name.split(".")[0] in HEAVY]
    assert names.count("notifyctl.cli.startup") == 1  # `python -m notifyctl.cli` builds the app once
    assert "notifyctl.cli.send" in names and "notifyctl.cli.dlq" not in names  # ... with the send command only
    assert not [name for name in names if name.startswith("notifyctl.intake.")]  # no file parsers


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["send", "-t", "x"], "send"),
        (["--config", "a.toml", "users", "import", "f.csv"], "users"),
        (["-c", "a.toml", "--log-level", "debug", "send"], "send"),
        (["--config=a.toml", "-ca.toml", "--log-file=x.log", "runs", "list"], "runs"),
        (["--help", "send"], None),
        (["-h"], None),
        (["--version"], None),
        (["--config", "a.toml"], None),
        ([], None),
    ],
)
def test_the_invoked_command_is_found_only_when_plainly_named(argv: list[str], expected: str | None) -> None:
    assert startup._invoked_command(argv) == expected


def test_only_a_known_plainly_named_command_is_built_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    send = startup._app_for(["send", "--json"])
    users = startup._app_for(["users", "show", "u1"])
    doctor = startup._app_for(["doctor"])  # registered by cli/admin.py

    assert [info.callback.__name__ for info in send.registered_commands if info.callback] == ["send"]
    assert not send.registered_groups
    assert not users.registered_commands and [info.name for info in users.registered_groups] == ["users"]
    assert [info.name for info in doctor.registered_commands] == ["doctor"]
    assert len(app.registered_commands) > 1 and len(app.registered_groups) > 1  # the app is left whole
    for argv in (["sendx"], ["--help", "send"], []):
        assert startup._app_for(argv) is app
    monkeypatch.setenv("_NOTIFYCTL_COMPLETE", "complete_bash")
    assert startup._app_for(["send"]) is app


@pytest.mark.parametrize("argv", [["send", "--help"], ["users", "import", "--help"], ["dlq", "--help"]])
def test_a_command_built_alone_reads_as_in_the_whole_app(argv: list[str]) -> None:
    def run(app: typer.Typer) -> str:
        result = CliRunner().invoke(app, argv, prog_name="notifyctl")
        assert result.exit_code == 0
        return str(result.stdout)

    assert run(startup._app_for(argv)) == run(app)


def test_output_consoles_and_mask_address_are_made_on_first_use() -> None:
    from rich.console import Console

    from notifyctl.cli.output import mask_address
    from notifyctl.security.redaction import mask_address as the_real_one

    assert mask_address is the_real_one
    assert isinstance(output.console, Console) and isinstance(output.err_console, Console)
    assert output.err_console.stderr and not output.console.stderr
    with pytest.raises(AttributeError):
        _ = output.no_such_thing  # type: ignore[attr-defined]
    code = "import sys, notifyctl.cli.progress as o; p = o.ChannelProgress(enabled=False); print('rich' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False"


def test_the_cli_leaves_with_its_exit_status_and_its_output(ws: Workspace) -> None:
    env = {**os.environ, "NOTIFYCTL_CONFIG": str(ws.config)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "notifyctl.cli", *args]
        return subprocess.run(command, cwd=ws.root, env=env, capture_output=True, text=True, timeout=120)

    sent = run("send", "-t", "welcome", "-u", "u1", "--channel", "inapp", "--data", '{"product_name": "A"}', "--json")
    missing = run("users", "show", "nobody")
    usage = run("send", "--no-such-option")

    assert sent.returncode == 0 and sent.stdout.rstrip().endswith("}") and '"sent": 1' in sent.stdout
    assert missing.returncode == 2 and "nobody" in missing.stderr
    assert usage.returncode == 2 and "No such option" in usage.stderr


EXIT_SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from notifyctl.cli.startup import _exit_without_teardown
atexit.register(lambda: Path(sys.argv[1]).write_text("ran"))
sys.stdout.write("buffered output")
if sys.argv[2] == "thread":
    threading.Thread(target=lambda: time.sleep(0.3)).start()  # still running: Python must join it
try:
    _exit_without_teardown(SystemExit(int(sys.argv[3])))
except BaseException:
    pass
sys.stdout.write(" and then the usual exit")
raise SystemExit(int(sys.argv[3]))
"""


@pytest.mark.parametrize("code", [0, 3])
def test_leaving_without_teardown_runs_exit_handlers_and_flushes(tmp_path: Path, code: int) -> None:
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(marker), "-", str(code)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, marker.read_text()) == (code, "buffered output", "ran")


def test_with_another_thread_running_python_exits_as_usual(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(marker), "thread", "4"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (4, "buffered output and then the usual exit")


def test_a_non_integer_exit_leaves_as_python_does(tmp_path: Path) -> None:
    script = EXIT_SCRIPT.replace("SystemExit(int(sys.argv[3]))", "SystemExit(sys.argv[3])")
    marker = tmp_path / "marker"
    done = subprocess.run([sys.executable, "-c", script, str(marker), "-", "boom"], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr.strip()) == (1, "buffered output and then the usual exit", "boom")
