"""Import users from a file into the directory: validated whole first, then written in batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from notifyctl.app.context import Context
from notifyctl.errors import InputError, RowError
from notifyctl.settings import Settings
from notifyctl.store.db import record_event, transaction


@dataclass
class ImportResult:
    """How many users were written, and the rows rejected (the first ones, and how many)."""

    imported: int
    errors: list[RowError]
    error_count: int


def plain_http_hosts(settings: Settings) -> tuple[str, ...]:
    """The hosts a webhook_url may name over plain http://: those every webhook provider of the
    webhook channel allows (`allow_hosts`; any of them may carry a delivery). None without one."""
    route = settings.channels.get("webhook")
    names = [name for name in (route.names if route else []) if settings.providers[name].type == "webhook"]
    if not names:
        return ()
    allowed = [[str(host) for host in settings.providers[name].options.get("allow_hosts", ())] for name in names]
    return tuple(host for host in allowed[0] if all(host in others for others in allowed[1:]))


def import_users(ctx: Context, path: Path, *, skip_invalid: bool = False, batch: int = 5000) -> ImportResult:
    """Read and validate the whole file once, staging the valid rows; then upsert them in batches
    of `batch`. Without --skip-invalid a bad row means nothing is written."""
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    from notifyctl.intake import users_import  # here: a one-off send needs no parsers

    with users_import.staged_users(path, batch=batch, plain_http_hosts=plain_http_hosts(ctx.settings)) as staged:
        count = staged.error_count
        if count and not skip_invalid:
            raise InputError(
                f"{path}: {count} invalid row(s); nothing was imported "
                "(fix them, or pass --skip-invalid to import the valid rows)",
                staged.errors,
            )
        imported = staged.write(ctx.conn)
    with transaction(ctx.conn):
        record_event(ctx.conn, "users_import", str(path), {"imported": imported, "rejected": count})
    return ImportResult(imported, staged.errors, count)
