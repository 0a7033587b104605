"""What every use case works with: settings, the database, the templates and the clock, opened once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from notifyctl.backends.local import LocalBackend
from notifyctl.errors import NotFound
from notifyctl.pipeline.engine import Backend, Engine, Progress, utc_clock
from notifyctl.security.secret import InstallationSecret
from notifyctl.settings import Settings
from notifyctl.store.db import connect
from notifyctl.store.secrets import installation_secret
from notifyctl.templates.store import TemplateStore

if TYPE_CHECKING:
    from notifyctl.backends.redis.coordinator import ClusterOptions

Clock = Callable[[], datetime]
# What a command does about a database that does not exist yet: make it (commands that store
# something), refuse (commands that read), or read an empty one that is never written to disk.
Missing = Literal["create", "refuse", "empty"]


def no_database(path: Path) -> NotFound:
    """The one-line error of a command that reads a database that does not exist."""
    return NotFound(
        f"no database at {path}: nothing was created. `notifyctl init` or a first `notifyctl users import "
        "FILE` (or send, broadcast, serve) makes it; if another one is meant, name its configuration with "
        "--config or NOTIFYCTL_CONFIG (see `notifyctl config show --origin`)"
    )


@dataclass
class Context:
    """Everything a command needs, opened once."""

    settings: Settings
    conn: sqlite3.Connection
    templates: TemplateStore
    clock: Clock = utc_clock
    cluster: ClusterOptions | None = None  # runs go to Redis workers

    @classmethod
    def open(
        cls,
        settings: Settings,
        clock: Clock = utc_clock,
        cluster: ClusterOptions | None = None,
        *,
        missing: Missing = "create",
    ) -> Context:
        """Open the database (see `Missing` for one that does not exist yet) and the templates."""
        path = settings.database_path
        if missing != "create" and str(path) != ":memory:" and not path.exists():
            if missing == "refuse":
                raise no_database(path)
            path = Path(":memory:")
        templates = TemplateStore(
            settings.templates_path, render_timeout_s=settings.render_timeout_s, categories=settings.categories
        )
        return cls(settings, connect(path), templates, clock, cluster)

    @cached_property
    def secret(self) -> InstallationSecret:
        """The installation's secret (store/secrets.py), read once per context."""
        return installation_secret(self.conn, self.settings)

    def engine(self, progress: Progress | None = None, backend: Backend | None = None) -> Engine:
        """An engine for this context: on the embedded backend, or on Redis workers with `cluster`."""
        idempotency = None
        if backend is None and self.cluster is not None:
            from notifyctl.backends.redis.coordinator import RedisBackend, redis_idempotency

            backend = RedisBackend(self.cluster)
            idempotency = redis_idempotency(self.settings, self.cluster)
        return Engine(
            self.settings,
            self.conn,
            self.templates,
            clock=self.clock,
            progress=progress,
            backend=backend or LocalBackend(),
            idempotency=idempotency,
        )
