"""Push tokens nobody has registered again for months: counted (`doctor`) and pruned (`devices prune`).

A token is seen when it is registered (`POST /v1/users/{id}/devices`, a users import carrying it);
one that no app has registered again for STALE_AFTER most likely belongs to an uninstalled app or
a device long gone, and FCM itself lets an inactive token expire after 270 days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from notifyctl.errors import InputError
from notifyctl.store import directory
from notifyctl.store.db import iso

if TYPE_CHECKING:  # `doctor` reads STALE_AFTER without opening a context
    from notifyctl.app.context import Context

STALE_AFTER = timedelta(days=270)
_AGE = re.compile(r"\s*(\d+)\s*([dwh])\s*")
_UNITS = {"d": "days", "w": "weeks", "h": "hours"}


def parse_age(text: str) -> timedelta:
    """'270d' (days), '40w' (weeks) or '12h' (hours); InputError otherwise."""
    match = _AGE.fullmatch(text)
    if match is None or int(match[1]) == 0:
        raise InputError(f"--older-than: '{text}' is not an age like 270d, 40w or 12h")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@dataclass(frozen=True)
class Pruned:
    """What `devices prune` removed (or, with dry_run, would remove)."""

    seen_before: str  # ISO: tokens last registered before this
    count: int
    dry_run: bool


def prune(ctx: Context, older_than: timedelta, *, dry_run: bool = False) -> Pruned:
    """Remove the push tokens not registered again for `older_than` (audited); with `dry_run`, only
    count them."""
    seen_before = iso(ctx.clock() - older_than)
    if dry_run:
        return Pruned(seen_before, directory.stale_devices(ctx.conn, seen_before), True)
    return Pruned(seen_before, directory.prune_devices(ctx.conn, seen_before, source="cli"), False)
