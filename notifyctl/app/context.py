"""What every use case works with: settings, the database, the templates and the clock, opened once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from notifyctl.pipeline.engine import Engine, Progress, utc_clock
from notifyctl.settings import Settings
from notifyctl.store.db import connect
from notifyctl.templates.store import TemplateStore

Clock = Callable[[], datetime]


@dataclass
class Context:
    """Everything a command needs, opened once."""

    settings: Settings
    conn: sqlite3.Connection
    templates: TemplateStore
    clock: Clock = utc_clock

    @classmethod
    def open(cls, settings: Settings, clock: Clock = utc_clock) -> Context:
        templates = TemplateStore(settings.templates_path, render_timeout_s=settings.render_timeout_s)
        return cls(settings, connect(settings.database_path), templates, clock)

    def engine(self, progress: Progress | None = None) -> Engine:
        return Engine(self.settings, self.conn, self.templates, clock=self.clock, progress=progress)
