"""The transmit stage: token bucket → claim (intent durable, policy re-checked) → provider call →
outcome recorded.

One Sender serves every backend: the embedded engine and each sender process run it in-process
with the ledger's claims and sink; a Redis worker runs it with claims made in Redis (revocations,
idempotency) and a sink that reports to the coordinator's outcome stream. Either way the intent is
durable before the provider is called and the outcome is recorded after, by one recorder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from notifyctl.errors import OutcomeUnknown, PermanentError, RateLimited, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.pipeline import outcomes
from notifyctl.pipeline.backend import (
    REROUTE,
    STOPPED,
    TAKEN,
    TAKEN_RESULT,
    Bucket,
    Claims,
    Dispatch,
    OutcomeSink,
    Result,
)
from notifyctl.pipeline.backpressure import EndpointHolds
from notifyctl.pipeline.churn import ChurnGuard
from notifyctl.pipeline.outcomes import Outcome
from notifyctl.pipeline.retry import backoff_s, should_retry
from notifyctl.pipeline.router import CircuitBreaker
from notifyctl.pipeline.runlog import OutcomeLog
from notifyctl.providers.base import BatchProvider, Provider, endpoint_of
from notifyctl.providers.capabilities import check as check_capabilities
from notifyctl.security.redaction import Scrubber
from notifyctl.settings import RetrySettings


def result_of(outcome: Outcome, stopping: bool = False) -> Result:
    """What the engine does next after an outcome."""
    if outcome.final:
        return Result("settled", outcome.progress_state)
    if stopping:
        return STOPPED  # recorded as due now: resume picks it up
    return Result("retry", delay_s=outcomes.due_in(outcome))


class Sender:
    def __init__(
        self,
        providers: dict[str, Provider],
        buckets: dict[str, Bucket],
        breakers: dict[str, CircuitBreaker],
        concurrency: dict[str, int],
        retry: RetrySettings,
        claims: Claims,
        sink: OutcomeSink,
        stopping: Callable[[], bool],
        resend_in_doubt: Callable[[str], bool],
        scrubber: Scrubber | None = None,
    ) -> None:
        """`resend_in_doubt(provider)`: whether an attempt of unknown outcome on that account is re-sent
        (outcomes.resend_in_doubt with the settings). `scrubber`: the configured secrets
        (Scrubber.from_settings), removed from every provider error's text before it is recorded."""
        self.providers = providers
        self.buckets = buckets
        self.breakers = breakers
        self.semaphores = {name: asyncio.Semaphore(n) for name, n in concurrency.items()}
        self.retry = retry
        self.claims = claims
        self.sink = sink
        self.stopping = stopping
        self.resend_in_doubt = resend_in_doubt
        self.holds = EndpointHolds()
        self.scrubber = scrubber
        self.churn = ChurnGuard()  # a configuration error must not pass for token churn (pipeline/churn.py)
        self.outcome_log = OutcomeLog.if_enabled()  # the log level, read once: None costs one test per outcome

    async def transmit(self, envelope: Envelope, provider_name: str, attempt: int) -> Result:
        """One attempt of one delivery through `provider_name` (attempt counts from 1)."""
        return (await self.transmit_batch([envelope], provider_name, [attempt]))[0]

    async def transmit_batch(
        self, envelopes: list[Envelope], provider_name: str, attempts: list[int], *, reroutable: bool = False
    ) -> list[Result]:
        """Several deliveries in one provider call where the provider has a batch API."""
        if self.holds and self.providers[provider_name].capabilities.per_endpoint:
            held = [self.holds.remaining(endpoint_of(e.address)) for e in envelopes]
            if any(held):
                return await self._around_holds(envelopes, provider_name, attempts, held, reroutable)
        bucket = self.buckets[provider_name]
        await bucket.acquire(len(envelopes))
        if self.stopping():
            return [STOPPED for _ in envelopes]  # still pending in the outbox
        if reroutable and self.breakers[provider_name].state == "open":
            # The breaker opened while these waited for tokens: not attempted, route them again.
            return [REROUTE for _ in envelopes]
        dispatches = [Dispatch(e, a, provider_name) for e, a in zip(envelopes, attempts, strict=True)]
        verdicts = await self.claims.claim(dispatches)
        results: list[Result | None] = [None] * len(dispatches)
        claimed: list[int] = []
        for i, verdict in enumerate(verdicts):
            if verdict is None:
                claimed.append(i)
            elif verdict == TAKEN:
                results[i] = TAKEN_RESULT
            else:
                assert isinstance(verdict, Outcome)
                self.sink.record(verdict)
                if self.outcome_log is not None:
                    self.outcome_log.record(verdict)
                results[i] = result_of(verdict)
        if claimed:
            await bucket.pace(len(claimed))
            called = await self._call([dispatches[i] for i in claimed])
            for i, result in zip(claimed, called, strict=True):
                results[i] = result
        return [r if r is not None else STOPPED for r in results]

    async def _around_holds(
        self, envelopes: list[Envelope], provider_name: str, attempts: list[int], held: list[float], reroutable: bool
    ) -> list[Result]:
        """Deliveries to a held endpoint come back later, not attempted; the others go on."""
        results = [Result("later", delay_s=wait) if wait else STOPPED for wait in held]
        free = [i for i, wait in enumerate(held) if not wait]
        if free:
            sent = await self.transmit_batch(
                [envelopes[i] for i in free], provider_name, [attempts[i] for i in free], reroutable=reroutable
            )
            for i, result in zip(free, sent, strict=True):
                results[i] = result
        return results

    async def _call(self, dispatches: list[Dispatch]) -> list[Result]:
        """The provider call for claimed dispatches, and their outcomes. What the provider declares it
        cannot take is refused here, never sent (providers/capabilities.py)."""
        provider_name = dispatches[0].provider
        provider = self.providers[provider_name]
        answers: list[SendResult | BaseException | None] = [None] * len(dispatches)
        to_send: list[tuple[int, Envelope]] = []
        refused = self.churn.refusal(provider_name)  # stopped by the churn guard: not called any more
        for i, dispatch in enumerate(dispatches):
            fitted = refused or check_capabilities(dispatch.envelope, provider.capabilities)
            if isinstance(fitted, PermanentError):
                answers[i] = fitted
            else:
                to_send.append((i, fitted))
        started = time.perf_counter()
        if to_send:
            async with self.semaphores[provider_name]:
                sent: list[SendResult | BaseException]
                if len(to_send) == 1:
                    try:
                        sent = [await provider.send(to_send[0][1])]
                    except Exception as exc:
                        sent = [exc]
                else:
                    try:
                        batch = cast(BatchProvider, provider)
                        sent = list(await batch.send_batch([envelope for _, envelope in to_send]))
                    except Exception as exc:
                        sent = [exc for _ in to_send]
            for (i, _), reply in zip(to_send, sent, strict=True):
                answers[i] = reply
        latency_ms = (time.perf_counter() - started) * 1000
        if to_send:  # the breaker hears once per provider call: one failed batch request is one failure
            called = [answers[i] for i, _ in to_send]
            failures = [outcomes.classify(a) for a in called if not isinstance(a, SendResult) and a is not None]
            # One endpoint's trouble (a webhook receiver's) is not the provider's: it trips no breaker.
            if len(failures) == len(called) and all(_provider_wide(f) for f in failures):
                self.breakers[provider_name].failure()  # every message of the call failed as a sick provider fails
            else:
                self.breakers[provider_name].success()
        self.churn.screen(provider_name, answers, [i for i, _ in to_send])  # before any token is removed
        results: list[Result] = []
        for dispatch, answered in zip(dispatches, answers, strict=True):
            assert answered is not None
            outcome = self._outcome(dispatch, answered, latency_ms)
            self.sink.record(outcome)
            if self.outcome_log is not None:
                self.outcome_log.record(outcome)
            results.append(result_of(outcome, self.stopping()))
        return results

    def _outcome(self, dispatch: Dispatch, answer: SendResult | BaseException, latency_ms: float) -> Outcome:
        envelope, attempt, provider_name = dispatch.envelope, dispatch.attempt, dispatch.provider
        if isinstance(answer, SendResult):
            return outcomes.sent(envelope, attempt, provider_name, answer.provider_message_id, latency_ms)
        error = outcomes.classify(answer)
        retry_at: float | None = None
        resend = False
        if isinstance(error, TransientError):
            if error.endpoint is not None:
                if error.retry_after_s:  # that endpoint's backpressure: it alone waits
                    self.holds.hold(error.endpoint, min(error.retry_after_s, self.retry.retry_after_cap_s))
            elif isinstance(error, RateLimited):
                self.buckets[provider_name].slow_down(error.retry_after_s, self.retry.rate_limit_slowdown_s)
            if should_retry(attempt, self.retry):
                # Stopping: the failed attempt is recorded and the row left due now, for resume.
                delay = 0.0 if self.stopping() else backoff_s(attempt, self.retry, error.retry_after_s)
                retry_at = time.time() + delay
        elif isinstance(error, OutcomeUnknown):
            resend = self.resend_in_doubt(provider_name) and should_retry(attempt, self.retry)
            if resend:  # re-sent with the same backoff as a retry: a receiver that stalls is not hammered
                retry_at = time.time() + (0.0 if self.stopping() else backoff_s(attempt, self.retry, None))
        return outcomes.failed(
            envelope,
            attempt,
            provider_name,
            error,
            latency_ms,
            retry_at=retry_at,
            resend=resend,
            scrub=self.scrubber,
        )


def _provider_wide(error: BaseException) -> bool:
    """A failure that says the provider is unwell (counts towards its circuit breaker)."""
    if isinstance(error, TransientError | OutcomeUnknown):
        return error.endpoint is None
    return False
