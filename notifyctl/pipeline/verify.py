"""Policy at dispatch: decided on the page's answers, checked again at the intent's commit.

A delivery is decided right before it is dispatched (an opt-out lands before the very next message)
on its page's policy answers, without reading the directory again. The claim then commits the
intent and reads the directory's change counter in the same transaction, under the write lock
(store/ledger.py); if the counter moved since the page's answers were read, the delivery is decided
again on fresh reads, and withdrawn before its provider call if it may no longer go out. No opt-out
can commit between that read and the intent, so an opt-out committed before the intent is always
seen, and one committed after it finds the delivery already in flight (in Redis mode, the opt-out
then revokes it for the workers: backends/redis/revocations.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from notifyctl.models import Decision
from notifyctl.pipeline.lanes import Queued
from notifyctl.policy.decide import Policy, PolicyView


def decide(policy: Policy, item: Queued, now: datetime, view: PolicyView | None, verify: bool = True) -> Decision:
    """Policy for a queued delivery (on `view`'s answers where they cover it)."""
    row, user = item.row, item.user
    return policy.decide(
        channel=row["channel"],
        category=row["category"],
        address=row["address"],
        user_id=row["user_id"] if user else None,
        timezone=user.timezone if user else None,
        phone=user.phone if user else None,
        now=now,
        view=view,
        verify=verify,
    )


class Verifier:
    def __init__(self, policy: Policy, clock: Callable[[], datetime]) -> None:
        self.policy = policy
        self.clock = clock
        self._unverified: dict[int, tuple[int, Queued]] = {}

    def decide(self, item: Queued) -> Decision:
        """On the page's answers, the change counter left to the intent's commit (`recheck`)."""
        return decide(self.policy, item, self.clock(), item.view, verify=item.view is None)

    def remember(self, item: Queued) -> None:
        """A delivery decided `send` on its page's answers, about to be claimed."""
        if item.view is not None:
            self._unverified[item.row["id"]] = (item.view.version, item)

    def forget(self, delivery_id: int) -> None:
        self._unverified.pop(delivery_id, None)

    def recheck(self, delivery_id: int, version: int) -> Decision | None:
        """At the intent's commit, with the change counter read in it: None when the delivery may go
        out, else the decision that withdraws it."""
        checked = self._unverified.pop(delivery_id, None)
        if checked is None or checked[0] == version:
            return None
        decision = decide(self.policy, checked[1], self.clock(), None)
        return None if decision.action == "send" else decision
