"""SQLite persistence: one module per group of tables."""

from notifyctl.store.db import connect, transaction

__all__ = ["connect", "transaction"]
