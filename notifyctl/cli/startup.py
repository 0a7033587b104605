"""How `notifyctl` starts: the root app, built with only what a command line needs, and a quick exit.

A plain command line (`notifyctl [--config X] COMMAND ...`) imports the one module that defines
COMMAND and builds only that command: click then builds one command rather than all of them
(their options, their type hints). Help, a typo or shell completion get the whole app.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import typer

from notifyctl.cli.common import EXIT_CRASH, Options, global_options, settings

# Each top-level command or group, and the module of notifyctl.cli that adds it (`register(app)`).
COMMANDS = {
    "init": "init",
    "users": "users",
    "devices": "devices",
    "prefs": "prefs",
    "suppress": "suppress",
    "templates": "templates",
    "send": "send",
    "broadcast": "broadcast",
    "resume": "resume",
    "runs": "runs",
    "audit": "runs",
    "dlq": "dlq",
    "serve": "server",
    "consume": "consume",
    "keys": "server",
    "endpoints": "admin",
    "doctor": "admin",
    "worker": "cluster",
    "cluster": "cluster",
    "config": "config",
}
# Registered in this order, which is the order of `notifyctl --help`.
MODULES = tuple(dict.fromkeys(COMMANDS.values()))

# Long-lived commands: nothing to gain from leaving without teardown.
LONG_LIVED = ("serve", "consume", "worker")


def new_app() -> typer.Typer:
    """The root `notifyctl` app with its global options and no command yet."""
    root = typer.Typer(
        name="notifyctl",
        help="Multi-channel notifications (email, SMS, push, in-app, webhooks) that are never lost and never "
        "sent twice.\n\nExample: notifyctl broadcast campaigns/welcome.toml",
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    root.callback()(global_options)
    return root


def _registrar(module: str) -> Callable[[typer.Typer], None]:
    """The `register(app)` of one command module, imported now (import statements rather than
    importlib, so that the import graph and `python -X importtime` show them)."""
    if module == "init":
        from notifyctl.cli.init import register
    elif module == "users":
        from notifyctl.cli.users import register
    elif module == "devices":
        from notifyctl.cli.devices import register
    elif module == "prefs":
        from notifyctl.cli.prefs import register
    elif module == "suppress":
        from notifyctl.cli.suppress import register
    elif module == "templates":
        from notifyctl.cli.templates import register
    elif module == "send":
        from notifyctl.cli.send import register
    elif module == "broadcast":
        from notifyctl.cli.broadcast import register
    elif module == "resume":
        from notifyctl.cli.resume import register
    elif module == "runs":
        from notifyctl.cli.runs import register
    elif module == "dlq":
        from notifyctl.cli.dlq import register
    elif module == "server":
        from notifyctl.cli.server import register
    elif module == "consume":
        from notifyctl.cli.consume import register
    elif module == "admin":
        from notifyctl.cli.admin import register
    elif module == "cluster":
        from notifyctl.cli.cluster import register
    elif module == "config":
        from notifyctl.cli.config import register
    else:
        raise KeyError(module)
    return register


def build(modules: Iterable[str]) -> typer.Typer:
    """The root app with the commands of these modules of notifyctl.cli."""
    root = new_app()
    for module in modules:
        _registrar(module)(root)
    return root


@functools.cache
def whole_app() -> typer.Typer:
    """The app with every command (built once)."""
    return build(MODULES)


# The group's options that take a value (next, or attached); only these may come before the
# command for `main` to build that command alone (see `_app_for`).
_GROUP_VALUE_OPTIONS = ("--config", "-c", "--log-file", "--log-level")
_GROUP_VALUE_ATTACHED = ("--config=", "--log-file=", "--log-level=", "-c")
_GROUP_FLAGS = ("-v", "-vv", "-vvv", "--verbose", "-q", "--quiet")


def _invoked_command(argv: list[str]) -> str | None:
    """The command named on a command line like `[--config X] [--log-level L] COMMAND ...`; None
    when anything else comes first (--help, --version, no command)."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in _GROUP_VALUE_OPTIONS:
            i += 2
        elif token.startswith(_GROUP_VALUE_ATTACHED) or token in _GROUP_FLAGS:  # --config=FILE, -cFILE, -v
            i += 1
        elif token.startswith("-"):
            return None
        else:
            return token
    return None


def _app_for(argv: list[str]) -> typer.Typer:
    """The app with only the command the command line names, when it plainly names one; anything
    else (help, a typo, shell completion) gets the whole app."""
    import os

    name = _invoked_command(argv)
    module = COMMANDS.get(name or "")
    if module is None or any(key.startswith("_") and key.endswith("_COMPLETE") for key in os.environ):
        return whole_app()
    only = build([module])
    # A module may add more than the named command (`runs` and `audit`): keep that one only.
    only.registered_commands = [
        info
        for info in only.registered_commands
        if info.callback is not None and (info.name or typer.main.get_command_name(info.callback.__name__)) == name
    ]
    only.registered_groups = [info for info in only.registered_groups if info.name == name]
    if len(only.registered_commands) + len(only.registered_groups) != 1:
        return whole_app()
    return only


def _exit_without_teardown(done: SystemExit) -> None:
    """Leave as `done` would, without tearing the interpreter down: freeing every module and
    object one by one takes ~100 ms after a command that has already finished. Exit handlers still
    run (logging flushes its files, temporary directories go) and the standard streams are
    flushed; while another thread runs, or when anything is unusual, Python exits as usual."""
    import atexit
    import os
    import threading

    code = done.code
    if threading.active_count() > 1 or not (code is None or isinstance(code, int)):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe, say: Python's own exit reports it
        return
    os._exit(code or 0)


def _global_flags_first(argv: list[str]) -> list[str]:
    """-v/-q anywhere on the command line (`notifyctl send ... -v`) as if given before the command:
    they are the root's options, and click reads those before the command only."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [token for token in argv[:end] if token in _GROUP_FLAGS]
    if not flags:
        return argv
    return [*flags, *(token for token in argv[:end] if token not in _GROUP_FLAGS), *argv[end:]]


def main() -> None:
    """The `notifyctl` command."""
    argv = _global_flags_first(sys.argv[1:])
    given = Options()  # filled in by the global options; kept here for a crash report
    try:
        _app_for(argv)(args=argv, obj=given)
    except SystemExit as done:
        if _invoked_command(argv) not in LONG_LIVED:
            _exit_without_teardown(done)
        raise
    except Exception as exc:  # a bug: keep a scrubbed crash report, never a secret on screen
        from notifyctl.discovery import crash_dir
        from notifyctl.logs import write_crash_report
        from notifyctl.security.redaction import redact_secrets

        secrets: list[str] = []
        database: Path | None = None
        try:
            from notifyctl.security.redaction import configured_secrets

            loaded = settings(given)
            database = loaded.database_path
            secrets = configured_secrets(loaded)
        except Exception:  # the configuration itself may be what is broken
            pass
        try:  # under the state directory, never the working directory
            report = str(write_crash_report(exc, crash_dir(database), secrets))
        except OSError as unwritable:
            report = f"nowhere: {unwritable}"
        sys.stderr.write(f"notifyctl crashed: {redact_secrets(str(exc), secrets)}\nA report is in {report}\n")
        raise SystemExit(EXIT_CRASH) from None
