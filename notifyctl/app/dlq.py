"""Dead letters: list them, show one with its attempts, purge them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from notifyctl.app.audit import known_run
from notifyctl.app.context import Context
from notifyctl.errors import InputError, NotFound
from notifyctl.store import dead_letters as letters
from notifyctl.store.db import iso


def dead_letters(
    ctx: Context,
    *,
    run_id: str | None = None,
    channel: str | None = None,
    error_class: str | None = None,
    since: str | None = None,
) -> list[dict[str, Any]]:
    """Dead letters matching every filter given (a run named must exist)."""
    known_run(ctx, run_id)
    return letters.dead_letters(ctx.conn, run_id=run_id, channel=channel, error_class=error_class, since=since)


def dead_letter(ctx: Context, delivery_id: int) -> dict[str, Any]:
    """One dead letter with its envelope and attempts."""
    item = letters.dead_letter(ctx.conn, delivery_id)
    if item is None:
        raise NotFound(f"no dead letter for delivery {delivery_id} (see `notifyctl dlq list`)")
    return item


def purge_dead_letters(
    ctx: Context,
    *,
    ids: list[int] | None = None,
    run_id: str | None = None,
    before: datetime | None = None,
    all_: bool = False,
) -> int:
    """Delete the dead letters matching every filter given; `all_` when none is. Returns how many."""
    if not (ids or run_id or before or all_):
        raise InputError("say which dead letters to purge: --id, --run, --before or --all")
    known_run(ctx, run_id)
    return letters.purge(ctx.conn, ids=ids, run_id=run_id, before=iso(before) if before else None)
