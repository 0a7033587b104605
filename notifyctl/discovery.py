"""Which notifyctl.toml a command uses, found the way git finds its repository, and where its state lives.

In order: `--config FILE`, then NOTIFYCTL_CONFIG, then `notifyctl.toml` in the working directory
or the nearest parent that has one, then the user's `$XDG_CONFIG_HOME/notifyctl/notifyctl.toml`
(`~/.config` when XDG_CONFIG_HOME is unset). None of these: no file, the embedded defaults.

The state directory holds what notifyctl writes besides the database (crash reports, copies of
standard input that a run may resume from). It sits next to the database; a configuration from
the user's config directory keeps its database and state in `$XDG_STATE_HOME/notifyctl/`
(`~/.local/state`) unless it sets `database`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from notifyctl.errors import ConfigError

CONFIG_FILE = "notifyctl.toml"
CONFIG_ENV = "NOTIFYCTL_CONFIG"
STATE_DIR_NAME = "notifyctl-state"  # next to the database
DATABASE_FILE = "notifyctl.db"

How = Literal["--config", "NOTIFYCTL_CONFIG", "working directory", "user config", "none"]


@dataclass(frozen=True)
class Found:
    """The configuration file a command uses (None: the embedded defaults), and how it was found."""

    path: Path | None
    how: How

    def in_user_dir(self, env: Mapping[str, str]) -> bool:
        """Whether the file is the user's own (however it was named: a sender process started for a
        run gets it as --config, and must find the same database)."""
        if self.how == "user config":
            return True
        return self.path is not None and self.path.resolve() == user_config_file(env).resolve()


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _xdg(env: Mapping[str, str], name: str, fallback: str) -> Path:
    """An XDG base directory: the variable when it is an absolute path (the spec ignores others)."""
    value = env.get(name, "")
    return Path(value) if value and Path(value).is_absolute() else _home(env) / fallback


def user_config_file(env: Mapping[str, str]) -> Path:
    """`$XDG_CONFIG_HOME/notifyctl/notifyctl.toml`."""
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "notifyctl" / CONFIG_FILE


def user_state_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/notifyctl/`: a user configuration's database and state, and crash reports
    made before any configuration could be read."""
    return _xdg(env, "XDG_STATE_HOME", ".local/state") / "notifyctl"


def _nearest(start: Path) -> Path | None:
    """notifyctl.toml in `start` or the nearest of its parents that has one."""
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def find_config(explicit: Path | None, env: Mapping[str, str], cwd: Path | None = None) -> Found:
    """The configuration file to read; a file named explicitly (option or variable) must exist."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError("configuration file not found", path=str(explicit))
        return Found(explicit, "--config")
    if env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
        if not path.is_file():
            raise ConfigError(f"configuration file not found (from {CONFIG_ENV})", path=str(path))
        return Found(path, "NOTIFYCTL_CONFIG")
    local = _nearest((cwd or Path.cwd()).resolve())
    if local is not None:
        return Found(local, "working directory")
    user = user_config_file(env)
    if user.is_file():
        return Found(user, "user config")
    return Found(None, "none")


def state_dir_of(database: Path) -> Path:
    """The state directory of a database: `notifyctl-state/` in the database's folder."""
    return database.parent / STATE_DIR_NAME


def crash_dir(database: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """Where a crash report goes: the state directory's `crash/`, or the user's state directory
    when the crash came before a configuration could be read."""
    if database is not None:
        return state_dir_of(database) / "crash"
    return user_state_dir(os.environ if env is None else env) / "crash"
