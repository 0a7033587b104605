"""The service run's backlog: deliveries accepted by `POST /v1/notify` and not yet settled.

`serve` refuses new notifications (503 with Retry-After) while the backlog is at `[server]
max_pending`, rather than accept without limit. Counting it must cost nothing per request, so the
engine reports to it as it reports progress to a CLI's bars: deliveries planned pending add, each
one settled (sent, skipped, deferred, dead, in doubt) takes one away. Deferred deliveries the
engine releases later (quiet hours over) come back without a report, so every RECOUNT_S the count
is taken again from the outbox (one index range of the run's pending and in-flight rows).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from notifyctl.models import DeliveryState
from notifyctl.store import runs

RECOUNT_S = 5.0
_UNSETTLED = frozenset({DeliveryState.pending, DeliveryState.inflight})


class Backlog:
    """The engine's Progress for the service run, and the count `POST /v1/notify` checks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.refused = 0  # requests answered 503 because the backlog was full
        self._unsettled = 0
        self._counted_at = clock()

    def planned(self, channel: str, state: str, n: int) -> None:
        if state in _UNSETTLED:
            self._unsettled += n

    def outcome(self, channel: str, state: str) -> None:
        if state not in _UNSETTLED:
            self._unsettled = max(0, self._unsettled - 1)

    def counted(self) -> None:
        """The API's run is never fully planned; nothing to do."""

    def unsettled(self, conn: sqlite3.Connection, run_id: str) -> int:
        """The run's deliveries pending or in flight, counted again from the outbox now and then."""
        now = self.clock()
        if run_id and now - self._counted_at >= RECOUNT_S:
            self._counted_at = now
            self._unsettled = runs.unsettled_count(conn, run_id)
        return self._unsettled
