"""The interfaces behind which running in one process, in sender processes and on Redis workers differ.

The pipeline exists once: plan → decide → claim (the intent, durable) → send → record. What changes
with the backend sits behind these small interfaces, as brokers and rate-limit backends do in
dramatiq:

    Bucket        one provider account's token bucket (in-process, or shared by every worker in Redis)
    Claims        the intent: durable before the provider call, with the policy checked again at that
                  instant against the directory's change counter (in SQLite), or against the
                  revocations pushed by every opt-out (in Redis); and the idempotency claims
    OutcomeSink   where outcomes go: the ledger's next batch (SQLite), or the coordinator's outcome
                  stream (a worker), recorded in either case by pipeline/outcomes.py's one recorder
    Dispatcher    the queue of prepared deliveries: the in-process Sender (embedded, sender
                  processes), or the coordinator's publisher to the workers' streams (Redis)
    Backend       which of these an engine uses, and which rows it feeds (sender processes shard
                  them); declared beside the engine (pipeline/engine.py), which it is handed

backends/local.py, backends/processes.py and backends/redis/ implement them; the guarantee tests in
tests/contract/ run every path through the same cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from notifyctl.models import Envelope
from notifyctl.pipeline.outcomes import Outcome


class Bucket(Protocol):
    """A provider account's token bucket."""

    async def acquire(self, n: int = 1) -> None:
        """Wait for `n` tokens."""

    async def pace(self, n: int = 1) -> None:
        """Right before a provider call of `n` messages whose tokens were taken: wait if the calls of
        the last second are already at the limit (a no-op where the bucket cannot know)."""

    def slow_down(self, retry_after_s: float | None, for_s: float) -> None:
        """The provider account said 429: pause until retry_after_s and halve the rate for `for_s`."""


@dataclass(frozen=True)
class Dispatch:
    """One delivery on its way to a provider: the rendered envelope, its attempt number (from 1) and
    the provider account chosen for it."""

    envelope: Envelope
    attempt: int
    provider: str


TAKEN: Literal["taken"] = "taken"
# What a claim says of one dispatch: None (claimed: send it), a withdrawn Outcome (policy or another
# database's idempotency key said no: record it, do not send), or TAKEN (another sender of the run
# holds it: neither send nor record).
Verdict = Outcome | Literal["taken"] | None


class Claims(Protocol):
    async def claim(self, dispatches: Sequence[Dispatch]) -> list[Verdict]:
        """Make each dispatch's intent durable (attempt N in flight on provider P) before any provider
        call, unless policy, checked again at that instant, no longer allows it."""


class OutcomeSink(Protocol):
    def record(self, outcome: Outcome) -> None:
        """Record an outcome without waiting: queued behind the dispatch's intent. A crash before it is
        written leaves the intent, which resume treats as in doubt."""


@dataclass(frozen=True)
class Result:
    """What the engine does next with one delivery after a dispatch."""

    # settled: done in this run (`progress` is its state: sent, dead, skipped, deferred, in_doubt)
    # retry: due again in `delay_s` (not sent, or of unknown outcome where the receiver dedupes)
    # later: not attempted, due again in `delay_s` (its endpoint asked for time: a Retry-After)
    # stopped: not attempted, or attempted and left pending, because the engine is stopping
    # reroute: not attempted, the provider's breaker opened while it waited
    # taken: another sender of the run claimed it first
    state: Literal["settled", "retry", "later", "stopped", "reroute", "taken"]
    progress: str = ""
    delay_s: float = 0.0


STOPPED = Result("stopped")
REROUTE = Result("reroute")
TAKEN_RESULT = Result("taken")


class Dispatcher(Protocol):
    """Takes prepared deliveries from the engine's lanes towards the providers."""

    async def transmit_batch(
        self, envelopes: list[Envelope], provider_name: str, attempts: list[int], *, reroutable: bool = False
    ) -> list[Result]:
        """Several deliveries through one provider account (one call where it has a batch API)."""
