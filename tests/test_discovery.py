"""Issue 17.2: one database, found predictably (like git finds its repository), never created by a
command that only reads. Each rule through the real CLI, with HOME and XDG_* in temporary folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.workspace import REPO


class Machine:
    """A fresh user account: a home, XDG folders, and the CLI run as a process from any folder."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.config_home = root / "xdg-config"
        self.state_home = root / "xdg-state"
        self.home.mkdir()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFYCTL_", "XDG_"))}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.config_home), XDG_STATE_HOME=str(self.state_home))
        env.update(extra)
        return env

    def run(self, cwd: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "notifyctl.cli", *args],
            cwd=cwd,
            env=self.env(**env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def shown(self, cwd: Path, *args: str, **env: str) -> dict[str, object]:
        """`config show --json --origin`: the settings and their origins, merged for assertions."""
        result = self.run(cwd, *args, "config", "show", "--json", "--origin", **env)
        assert result.returncode == 0, result.stderr
        document = orjson.loads(result.stdout)
        return {"settings": document["settings"], "origins": document["origins"]}


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


USERS = "user_id,email\nu1,ada@example.com\n"


def test_a_config_in_a_parent_folder_is_found_and_its_paths_are_relative_to_it(
    tmp_path: Path, machine: Machine
) -> None:
    project = tmp_path / "project"
    deep = project / "src" / "jobs"
    deep.mkdir(parents=True)
    (project / "notifyctl.toml").write_text('database = "var/notify.db"\n', encoding="utf-8")
    (deep / "users.csv").write_text(USERS, encoding="utf-8")

    imported = machine.run(deep, "users", "import", "users.csv")
    assert imported.returncode == 0, imported.stderr
    assert (project / "var" / "notify.db").is_file()
    assert not (deep / "notifyctl.db").exists() and not (deep / "var").exists()

    shown = machine.shown(deep)
    settings, origins = shown["settings"], shown["origins"]
    assert isinstance(settings, dict) and isinstance(origins, dict)
    assert settings["(config file)"] == str(project / "notifyctl.toml")
    assert settings["(database path)"] == str(project / "var" / "notify.db")
    assert settings["(state directory)"] == str(project / "var" / "notifyctl-state")
    assert origins["database"] == f"{project / 'notifyctl.toml'}: database"
    assert "working directory or its nearest parent" in origins["(config file)"]


def test_a_config_in_the_user_config_dir_keeps_its_database_in_the_state_home(tmp_path: Path, machine: Machine) -> None:
    (machine.config_home / "notifyctl").mkdir(parents=True)
    (machine.config_home / "notifyctl" / "notifyctl.toml").write_text("idempotency_window_hours = 24\n")
    elsewhere = tmp_path / "anywhere"
    elsewhere.mkdir()
    (elsewhere / "users.csv").write_text(USERS, encoding="utf-8")

    imported = machine.run(elsewhere, "users", "import", "users.csv")
    assert imported.returncode == 0, imported.stderr
    database = machine.state_home / "notifyctl" / "notifyctl.db"
    assert database.is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["users.csv"]  # nothing in the working directory
    assert not (machine.config_home / "notifyctl" / "notifyctl.db").exists()

    shown = machine.shown(elsewhere)
    settings, origins = shown["settings"], shown["origins"]
    assert isinstance(settings, dict) and isinstance(origins, dict)
    assert settings["(database path)"] == str(database)
    assert settings["(state directory)"] == str(machine.state_home / "notifyctl" / "notifyctl-state")
    assert "user's config directory" in origins["(config file)"]
    assert "XDG_STATE_HOME" in origins["(database path)"]
    assert settings["idempotency_window_hours"] == 24.0
    # Named with --config (as a run's sender processes get it), the same file finds the same database.
    named = machine.shown(elsewhere, "--config", str(machine.config_home / "notifyctl" / "notifyctl.toml"))
    assert isinstance(named["settings"], dict) and named["settings"]["(database path)"] == str(database)

    # Without XDG_STATE_HOME: ~/.local/state/notifyctl.
    env = {k: v for k, v in machine.env().items() if k != "XDG_STATE_HOME"}
    result = subprocess.run(
        [sys.executable, "-m", "notifyctl.cli", "config", "show", "--json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert orjson.loads(result.stdout)["settings"]["(database path)"] == str(
        machine.home / ".local" / "state" / "notifyctl" / "notifyctl.db"
    )


def test_a_user_config_that_sets_its_database_uses_it_relative_to_the_file(tmp_path: Path, machine: Machine) -> None:
    folder = machine.config_home / "notifyctl"
    folder.mkdir(parents=True)
    (folder / "notifyctl.toml").write_text('database = "mine.db"\n')
    shown = machine.shown(tmp_path)
    settings = shown["settings"]
    assert isinstance(settings, dict)
    assert settings["(database path)"] == str(folder / "mine.db")


def test_which_config_wins(tmp_path: Path, machine: Machine) -> None:
    """--config, then NOTIFYCTL_CONFIG, then the working directory (or a parent), then the user's."""
    files = {}
    for name in ("option", "variable", "local", "user"):
        folder = machine.config_home / "notifyctl" if name == "user" else tmp_path / name
        folder.mkdir(parents=True)
        files[name] = folder / "notifyctl.toml"
        files[name].write_text(f'database = "{name}.db"\n')
    cwd = tmp_path / "local"

    def chosen(*args: str, **env: str) -> str:
        settings = machine.shown(cwd, *args, **env)["settings"]
        assert isinstance(settings, dict)
        return Path(str(settings["(database path)"])).stem

    variable = {"NOTIFYCTL_CONFIG": str(files["variable"])}
    assert chosen("--config", str(files["option"]), **variable) == "option"
    assert chosen(**variable) == "variable"
    assert chosen() == "local"
    cwd = tmp_path / "option" / "sub"
    cwd.mkdir()
    assert chosen() == "option"  # the nearest parent with a notifyctl.toml
    cwd = tmp_path
    assert chosen() == "user"
    files["user"].unlink()
    assert chosen() == "notifyctl"  # nothing at all: ./notifyctl.db
    settings = machine.shown(tmp_path)["settings"]
    assert isinstance(settings, dict)
    assert settings["(database path)"] == str(tmp_path / "notifyctl.db")
    assert settings["(state directory)"] == str(tmp_path / "notifyctl-state")


def test_config_show_names_each_origin_and_masks_secrets(tmp_path: Path, machine: Machine) -> None:
    (tmp_path / "notifyctl.toml").write_text(
        'unsubscribe_secret = "file-secret-value-123"\n'
        "[providers.mail]\n"
        'type = "smtp"\nhost = "smtp.example.org"\npassword = "hunter2-smtp-password"\n'
        '[channels]\nemail = "mail"\n',
        encoding="utf-8",
    )
    shown = machine.shown(tmp_path, NOTIFYCTL_RETRY__MAX_ATTEMPTS="7")
    settings, origins = shown["settings"], shown["origins"]
    assert isinstance(settings, dict) and isinstance(origins, dict)
    config = tmp_path / "notifyctl.toml"
    assert settings["providers.mail.password"] == "***"
    assert settings["unsubscribe_secret"] == "***"
    assert settings["providers.mail.host"] == "smtp.example.org"
    assert origins["providers.mail.host"] == f"{config}: providers.mail.host"
    assert settings["retry.max_attempts"] == 7
    assert origins["retry.max_attempts"] == "environment NOTIFYCTL_RETRY__MAX_ATTEMPTS"
    assert origins["retry.base_s"] == "default"

    text = machine.run(tmp_path, "config", "show", "--origin", NOTIFYCTL_RETRY__MAX_ATTEMPTS="7")
    assert text.returncode == 0, text.stderr
    assert "hunter2" not in text.stdout and "file-secret" not in text.stdout
    assert "retry.max_attempts = 7    # environment NOTIFYCTL_RETRY__MAX_ATTEMPTS" in text.stdout
    assert f'providers.mail.password = "***"    # {config}: providers.mail.password' in text.stdout


READ_COMMANDS = [
    pytest.param(["runs", "list"], id="runs-list"),
    pytest.param(["runs", "show", "run_x"], id="runs-show"),
    pytest.param(["audit"], id="audit"),
    pytest.param(["dlq", "list"], id="dlq-list"),
    pytest.param(["dlq", "show", "1"], id="dlq-show"),
    pytest.param(["dlq", "redrive", "--all"], id="dlq-redrive"),
    pytest.param(["dlq", "purge", "--all"], id="dlq-purge"),
    pytest.param(["users", "show", "u1"], id="users-show"),
    pytest.param(["users", "forget", "u1", "--yes"], id="users-forget"),
    pytest.param(["prefs", "show", "u1"], id="prefs-show"),
    pytest.param(["prefs", "set", "u1", "--channel", "email", "--category", "marketing", "--off"], id="prefs-set"),
    pytest.param(["suppress", "list"], id="suppress-list"),
    pytest.param(["suppress", "remove", "email", "a@example.com"], id="suppress-remove"),
    pytest.param(["keys", "list"], id="keys-list"),
    pytest.param(["keys", "revoke", "k"], id="keys-revoke"),
    pytest.param(["endpoints", "show", "u1"], id="endpoints-show"),
    pytest.param(["devices", "prune", "--dry-run"], id="devices-prune"),
    pytest.param(["resume", "--due"], id="resume-due"),
    pytest.param(["resume", "run_x"], id="resume-run"),
]


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_a_command_that_reads_never_creates_a_database(tmp_path: Path, machine: Machine, args: list[str]) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    result = machine.run(tmp_path, *args, NOTIFYCTL_DATABASE=str(missing))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"no database at {missing}" in result.stderr and "notifyctl users import" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr  # one line
    assert not (tmp_path / "nonexistent").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_the_readme_cron_line_in_an_empty_home_creates_nothing(machine: Machine) -> None:
    """The old cron line (`notifyctl resume --due` in $HOME) made ~/notifyctl.db and found nothing."""
    result = machine.run(machine.home, "resume", "--due")
    assert result.returncode == 2
    assert f"no database at {machine.home / 'notifyctl.db'}" in result.stderr
    assert list(machine.home.iterdir()) == []


def test_the_readme_cron_line_names_its_configuration_and_finds_the_run(tmp_path: Path, machine: Machine) -> None:
    """`* * * * * notifyctl --config /srv/notify/notifyctl.toml resume --due`, run from $HOME."""
    project = tmp_path / "srv-notify"
    project.mkdir()
    config = project / "notifyctl.toml"
    config.write_text('database = "notifyctl.db"\n', encoding="utf-8")
    (project / "users.csv").write_text(USERS, encoding="utf-8")
    (project / "aud.csv").write_text("user_id,first_name\nu1,Ada\n", encoding="utf-8")
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    (project / "c.toml").write_text(
        f'id = "c1"\ntemplate = "welcome"\nchannels = ["inapp"]\naudience = "aud.csv"\n'
        f'send_at = "{later.isoformat(timespec="seconds")}"\n[data]\nproduct_name = "Acme"\n',
        encoding="utf-8",
    )
    shutil.copytree(REPO / "templates", project / "templates")
    assert machine.run(project, "users", "import", "users.csv").returncode == 0
    scheduled = machine.run(project, "broadcast", "c.toml", "--json")
    assert scheduled.returncode == 0, scheduled.stderr
    assert orjson.loads(scheduled.stdout)["state"] == "scheduled"
    time.sleep(max(0.0, (later - datetime.now(UTC)).total_seconds()) + 0.5)
    cron = machine.run(machine.home, "--config", str(config), "resume", "--due", "--json")
    assert cron.returncode == 0, cron.stderr
    assert orjson.loads(cron.stdout)["resumed"][0]["counts"] == {"inapp": {"sent": 1}}
    assert list(machine.home.iterdir()) == []


def test_commands_that_store_create_the_database_and_templates_check_needs_none(
    tmp_path: Path, machine: Machine
) -> None:
    (tmp_path / "users.csv").write_text(USERS, encoding="utf-8")
    checked = machine.run(
        REPO, "templates", "check", "welcome", "--audience", "campaigns/welcome-audience.csv",
        "--data", '{"product_name": "Acme"}', NOTIFYCTL_DATABASE=str(tmp_path / "db" / "n.db"),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert not (tmp_path / "db").exists()
    suppressed = machine.run(tmp_path, "suppress", "add", "email", "a@example.com")
    assert suppressed.returncode == 0, suppressed.stderr
    assert (tmp_path / "notifyctl.db").is_file()


def test_a_crash_report_goes_to_the_state_directory_not_the_working_directory(tmp_path: Path, machine: Machine) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notifyctl.toml").write_text('database = "data/n.db"\n')
    (project / "data").mkdir()
    (project / "data" / "n.db").write_bytes(b"this is not an SQLite database, whatever its name says" * 100)
    cwd = project / "jobs"
    cwd.mkdir()
    result = machine.run(cwd, "runs", "list")
    assert result.returncode == 70, result.stderr
    reports = list((project / "data" / "notifyctl-state" / "crash").glob("crash-*.txt"))
    assert len(reports) == 1 and str(reports[0]) in result.stderr
    assert list(cwd.iterdir()) == [] and not list(project.glob("crash-*"))
