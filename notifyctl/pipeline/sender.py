"""The transmit stage: token bucket → intent recorded → provider call → classify → outcome recorded.

The engine runs it in-process; a scale-out worker runs the same Sender on another machine with a
Recorder that reports to the coordinator and a Limiter shared through Redis. Either way the intent is
recorded before the provider is called and the outcome after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from notifyctl.errors import PermanentError, ProviderError, RateLimited, TransientError, Withdrawn
from notifyctl.models import Envelope, SendResult
from notifyctl.pipeline.limiter import Limiter
from notifyctl.pipeline.retry import backoff_s, should_retry
from notifyctl.pipeline.router import CircuitBreaker
from notifyctl.providers.base import BatchProvider, Provider
from notifyctl.settings import RetrySettings


class Recorder(Protocol):
    """Where a Sender writes what happened (the outbox ledger, or the coordinator's outcome stream)."""

    async def intent(self, envelope: Envelope, attempt: int, provider: str) -> None: ...

    async def sent(
        self, envelope: Envelope, attempt: int, provider: str, result: SendResult, latency_ms: float
    ) -> None: ...

    async def retry(
        self, envelope: Envelope, attempt: int, provider: str, error: TransientError, latency_ms: float, due: float
    ) -> None: ...

    async def dead(
        self, envelope: Envelope, attempt: int, provider: str, error: ProviderError, latency_ms: float, gave_up: bool
    ) -> None: ...


@dataclass
class Outcome:
    """What became of one transmission: sent, dead, retry after `delay_s`, or not attempted (stopping)."""

    # "sent" | "dead" | "retry" | "stopped" (not attempted, stays pending) | "reroute" (not attempted)
    # | "withdrawn" (policy changed its mind after the decision; the recorder's guard settled it)
    state: str
    delay_s: float = 0.0


@dataclass
class Failure:
    """How a failed attempt is recorded, the same by the ledger and by a scale-out worker."""

    code: str | None
    error_class: str
    message: str
    outcome: str  # the attempt's outcome: "rate_limited" | "transient" | "permanent"

    @classmethod
    def of(cls, error: ProviderError, attempt: int, gave_up: bool = False) -> Failure:
        message = str(error)[:500]
        if gave_up:
            message = f"gave up after {attempt} attempts: {message}"
        if isinstance(error, PermanentError):
            outcome = "permanent"
        else:
            outcome = "rate_limited" if isinstance(error, RateLimited) else "transient"
        return cls(getattr(error, "code", None), type(error).__name__, message, outcome)


def classify(exc: BaseException) -> ProviderError:
    """Anything a provider raised, as a ProviderError; an unexpected exception is a provider bug,
    kept as transient so that the delivery is retried rather than lost."""
    if isinstance(exc, (PermanentError, TransientError)):
        return exc
    return TransientError(f"unexpected {type(exc).__name__}: {exc}")


class Sender:
    def __init__(
        self,
        providers: dict[str, Provider],
        limiters: dict[str, Limiter],
        breakers: dict[str, CircuitBreaker],
        concurrency: dict[str, int],
        retry: RetrySettings,
        recorder: Recorder,
        stopping: Callable[[], bool],
    ) -> None:
        self.providers = providers
        self.limiters = limiters
        self.breakers = breakers
        self.semaphores = {name: asyncio.Semaphore(n) for name, n in concurrency.items()}
        self.retry = retry
        self.recorder = recorder
        self.stopping = stopping

    async def transmit(self, envelope: Envelope, provider_name: str, attempt: int) -> Outcome:
        """One attempt of one delivery through `provider_name` (attempt counts from 1)."""
        return (await self.transmit_batch([envelope], provider_name, [attempt]))[0]

    async def transmit_batch(
        self, envelopes: list[Envelope], provider_name: str, attempts: list[int], *, reroutable: bool = False
    ) -> list[Outcome]:
        """Several deliveries in one provider call where the provider has a batch API."""
        limiter = self.limiters[provider_name]
        for _ in envelopes:
            await limiter.acquire()
        if self.stopping():
            return [Outcome("stopped") for _ in envelopes]  # still pending in the outbox
        if reroutable and self.breakers[provider_name].state == "open":
            # The breaker opened while these waited for tokens: not attempted, route them again.
            return [Outcome("reroute") for _ in envelopes]
        withdrawn: set[int] = set()
        for i, (envelope, attempt) in enumerate(zip(envelopes, attempts, strict=True)):
            try:
                await self.recorder.intent(envelope, attempt, provider_name)
            except Withdrawn:
                withdrawn.add(i)
        if withdrawn:
            kept = [i for i in range(len(envelopes)) if i not in withdrawn]
            outcomes = [Outcome("withdrawn") for _ in envelopes]
            if kept:
                await limiter.pace(len(kept))
                sent = await self._call([envelopes[i] for i in kept], provider_name, [attempts[i] for i in kept])
                for i, outcome in zip(kept, sent, strict=True):
                    outcomes[i] = outcome
            return outcomes
        await limiter.pace(len(envelopes))
        return await self._call(envelopes, provider_name, attempts)

    async def _call(self, envelopes: list[Envelope], provider_name: str, attempts: list[int]) -> list[Outcome]:
        """The provider call for deliveries whose intents are committed, and their outcomes."""
        provider = self.providers[provider_name]
        started = time.perf_counter()
        results: list[SendResult | ProviderError]
        async with self.semaphores[provider_name]:
            if len(envelopes) == 1:
                try:
                    results = [await provider.send(envelopes[0])]
                except Exception as exc:
                    results = [classify(exc)]
            else:
                try:
                    answers = await cast(BatchProvider, provider).send_batch(envelopes)
                    results = [r if isinstance(r, SendResult) else classify(r) for r in answers]
                except Exception as exc:
                    results = [classify(exc) for _ in envelopes]
        latency_ms = (time.perf_counter() - started) * 1000
        # The breaker hears once per provider call: one failed batch request is one failure.
        breaker = self.breakers[provider_name]
        if all(isinstance(r, TransientError) for r in results):
            breaker.failure()
        else:
            breaker.success()
        return [
            await self._settle(envelope, attempt, provider_name, result, latency_ms)
            for envelope, attempt, result in zip(envelopes, attempts, results, strict=True)
        ]

    async def _settle(
        self,
        envelope: Envelope,
        attempt: int,
        provider_name: str,
        result: SendResult | ProviderError,
        latency_ms: float,
    ) -> Outcome:
        if isinstance(result, SendResult):
            await self.recorder.sent(envelope, attempt, provider_name, result, latency_ms)
            return Outcome("sent")
        if isinstance(result, PermanentError):
            await self.recorder.dead(envelope, attempt, provider_name, result, latency_ms, gave_up=False)
            return Outcome("dead")
        assert isinstance(result, TransientError)
        if isinstance(result, RateLimited):
            self.limiters[provider_name].slow_down(result.retry_after_s, self.retry.rate_limit_slowdown_s)
        if not should_retry(attempt, self.retry):
            await self.recorder.dead(envelope, attempt, provider_name, result, latency_ms, gave_up=True)
            return Outcome("dead")
        # Stopping: record the failed attempt and leave the row pending (due now) for resume.
        delay = 0.0 if self.stopping() else backoff_s(attempt, self.retry, result.retry_after_s)
        await self.recorder.retry(envelope, attempt, provider_name, result, latency_ms, time.time() + delay)
        return Outcome("stopped" if self.stopping() else "retry", delay)
