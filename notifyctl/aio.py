"""One way to run a top-level coroutine: on uvloop's event loop where it is installed.

Every process that sends (the CLI, a broadcast's sibling sender processes, `notifyctl worker`, the
cluster coordinator) runs its event loop through `run`, so that none of them falls back to
asyncio's pure-Python selector loop by accident: on loopback, the transports and the loop's own
bookkeeping are a third of a sender's CPU there, several times what they are on uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)`, on uvloop's loop when uvloop is importable (not on Windows)."""
    try:
        import uvloop
    except ImportError:  # not on every platform
        return asyncio.run(coro)
    return uvloop.run(coro)
