"""Install and start anywhere: the built wheel carries the examples, `notifyctl init` writes them.

The wheel test builds notifyctl as a user would (`pip wheel`, the build backend fetched by pip as
for any `pip install .`), installs it with `--no-deps` into a new virtualenv whose dependencies are
this test run's own (no download of the SDKs), and runs the README's start from an empty directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import orjson
import pytest

from tests.workspace import REPO

# What a checkout needs to build the wheel: the package (with its links to the examples) and what
# those links and pyproject.toml name.
SOURCES = ("pyproject.toml", "README.md", "notifyctl.example.toml", "notifyctl", "templates", "campaigns")


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of someone who has never used notifyctl on this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYCTL_") and k != "PYTHONPATH"}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "home" / ".config")
    env["XDG_STATE_HOME"] = str(tmp_path / "home" / ".local" / "state")
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """This checkout's notifyctl, as a separate process in `cwd`."""
    run_env = {k: v for k, v in (env or os.environ).items() if not k.startswith("NOTIFYCTL_")}
    run_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), run_env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "notifyctl.cli", *args], cwd=cwd, env=run_env, capture_output=True, text=True
    )


def build_wheel(out: Path) -> Path:
    """`pip wheel --no-deps` of a copy of this checkout (a build writes build/ into its source)."""
    source = out / "source"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (out / "dist").glob("notifyctl-*.whl")
    return wheel


def fresh_venv(root: Path) -> Path:
    """A new virtualenv (`--system-site-packages`) that also sees the site-packages this test runs
    with, where the dependencies are: a plain path in a .pth file, so that this run's editable
    notifyctl (a finder installed by a .pth of its own) is not what the new one imports."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(root)], check=True)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(site, "_notifyctl_test_deps.pth").write_text("".join(f"{p}\n" for p in ours), encoding="utf-8")
    return python


@pytest.mark.slow
def test_the_built_wheel_installs_and_starts_in_an_empty_directory(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "build")
    python = fresh_venv(tmp_path / "venv")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    empty = tmp_path / "anywhere"
    empty.mkdir()
    env = clean_env(tmp_path)

    where = subprocess.run(
        [str(python), "-c", "import notifyctl; print(notifyctl.__file__)"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout + where.stderr

    notifyctl = str(tmp_path / "venv" / "bin" / "notifyctl")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([notifyctl, *args], cwd=empty, env=env, capture_output=True, text=True, timeout=120)

    initialized = run("init")
    assert initialized.returncode == 0, initialized.stderr
    assert "notifyctl users import campaigns/example-users.csv" in initialized.stdout
    assert "notifyctl broadcast campaigns/welcome.toml" in initialized.stdout
    for name in ("notifyctl.toml", "campaigns/welcome.toml", "templates/welcome/manifest.toml"):  # one copy: the repo's
        assert (empty / name).read_bytes() == (
            REPO / ("notifyctl.example.toml" if name == "notifyctl.toml" else name)
        ).read_bytes()

    listed = run("templates", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {t["name"] for t in orjson.loads(listed.stdout)} == {"welcome", "order_shipped"}

    imported = run("users", "import", "campaigns/example-users.csv")
    assert imported.returncode == 0, imported.stderr
    sent = run("broadcast", "campaigns/welcome.toml", "--json")
    assert sent.returncode == 0, sent.stderr
    summary = orjson.loads(sent.stdout)
    assert summary["state"] == "completed"
    assert summary["counts"] == {"email": {"sent": 5}, "inapp": {"sent": 5}}
    assert len(list((empty / "outbox").glob("*.eml"))) == 5


def test_init_writes_a_working_directory_without_secrets(tmp_path: Path) -> None:
    done = cli("init", "demo", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    demo = tmp_path / "demo"
    assert report["directory"] == str(demo)
    assert report["database"] == str(demo / "notifyctl.db") and (demo / "notifyctl.db").is_file()
    assert report["next"] == [
        "cd demo",
        "notifyctl users import campaigns/example-users.csv",
        "notifyctl broadcast campaigns/welcome.toml",
    ]
    written = set(report["written"])
    assert {"notifyctl.toml", "campaigns/example-users.csv", "campaigns/welcome.toml"} <= written
    assert "templates/order_shipped/sms/text.fr-CA.j2" in written
    assert all((demo / name).is_file() for name in written)

    config = tomllib.loads((demo / "notifyctl.toml").read_text())
    assert "unsubscribe_secret" not in config and "unsubscribe_previous_secrets" not in config
    assert "webhook_secret" not in (demo / "campaigns" / "example-users.csv").read_text()  # made at import

    # The next two commands it printed work there, and `doctor` has nothing against the result.
    for command in report["next"][1:]:
        result = cli(*command.split()[1:], cwd=demo)
        assert result.returncode == 0, result.stderr
    doctor = cli("doctor", "--offline", cwd=demo)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "campaigns" / "welcome.toml").write_text("# mine\n")
    refused = cli("init", cwd=tmp_path)
    assert refused.returncode == 2
    assert "welcome.toml already exists" in refused.stderr and "--force" in refused.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["campaigns", "welcome.toml"]  # nothing written

    forced = cli("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "campaigns" / "welcome.toml").read_bytes() == (REPO / "campaigns" / "welcome.toml").read_bytes()
    assert "cd " not in forced.stdout  # already there: the next two commands only
    assert "notifyctl broadcast campaigns/welcome.toml" in forced.stdout
