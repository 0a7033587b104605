"""`notifyctl init`: a working directory to start from, written from the examples shipped in the package.

The examples are package data (notifyctl/examples/: the configuration, templates/ and campaigns/,
which in a source checkout are links to the repository's own folders), so an installed wheel writes
the same files as a checkout. Nothing written holds a secret: the installation's unsubscribe secret
is made in the database the first time it is needed (store/secrets.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import notifyctl
from notifyctl.errors import InputError

CONFIG_NAME = "notifyctl.toml"
# What the examples are for: the two commands that follow `init`, run in the directory it wrote.
NEXT_COMMANDS = ("notifyctl users import campaigns/example-users.csv", "notifyctl broadcast campaigns/welcome.toml")


@dataclass(frozen=True)
class Initialized:
    """What `init` wrote, relative to its directory, and what to run next."""

    directory: Path
    written: list[str]
    database: Path
    next_commands: list[str]


def examples_dir() -> Path:
    """The examples shipped with this notifyctl."""
    return Path(notifyctl.__file__).resolve().parent / "examples"


def example_files() -> dict[str, Path]:
    """Each file `init` writes, by its path relative to the new directory, and where it comes from."""
    root = examples_dir()
    files = {CONFIG_NAME: root / CONFIG_NAME}
    for folder in ("templates", "campaigns"):
        for source in sorted((root / folder).rglob("*")):
            if source.is_file() and "__pycache__" not in source.parts:
                files[source.relative_to(root).as_posix()] = source
    return files


def initialize(directory: Path, *, force: bool = False) -> Initialized:
    """Write the configuration, templates, example users and campaign into `directory`, then create
    its database. Refuses (InputError, nothing written) when one of the files exists, unless `force`."""
    from notifyctl.settings import load_settings
    from notifyctl.store.db import connect

    files = example_files()
    if not files.get("templates/welcome/manifest.toml"):
        raise InputError(f"this installation of notifyctl has no examples to write ({examples_dir()} is empty)")
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    existing = [name for name in files if (directory / name).exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(f"{directory / existing[0]} already exists{more}; nothing was written (--force overwrites)")
    try:
        for name, source in files.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot write in {directory}: {exc}") from exc
    settings = load_settings(directory / CONFIG_NAME)
    connect(settings.database_path).close()  # a database as the configuration places it
    return Initialized(directory, list(files), settings.database_path, list(NEXT_COMMANDS))
