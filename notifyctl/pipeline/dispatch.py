"""A lane's dispatchers: take a queued delivery, decide, render, dispatch, and act on the result.

Each dispatcher task takes the next delivery off its lane's queue, decides it again on its page's
policy answers (skip and defer are settled here, with no attempt), renders it, and hands it to the
backend's Dispatcher (the in-process Sender, or the publisher to the Redis workers) together with
what is already queued when the chosen provider has a batch API. What comes back is settled,
scheduled again (a retry), or left for resume (stopping).
"""

from __future__ import annotations

from collections.abc import Callable

from notifyctl.errors import TemplateError
from notifyctl.models import AttemptOutcome, Decision, DeliveryState, Envelope
from notifyctl.pipeline.backend import Dispatcher, Result
from notifyctl.pipeline.envelope import EnvelopeBuilder
from notifyctl.pipeline.lanes import Feeder, Lane, Queued
from notifyctl.pipeline.verify import Verifier
from notifyctl.providers.base import Provider
from notifyctl.store import outbox
from notifyctl.store.db import iso
from notifyctl.store.ledger import Ledger

Report = Callable[[str, str], None]  # (channel, state): the engine's progress


class LaneDispatch:
    def __init__(
        self,
        dispatcher: Dispatcher,
        builder: EnvelopeBuilder,
        verifier: Verifier,
        ledger: Ledger,
        feeder: Feeder,
        providers: dict[str, Provider],
        report: Report,
    ) -> None:
        self.dispatcher = dispatcher
        self.builder = builder
        self.verifier = verifier
        self.ledger = ledger
        self.feeder = feeder
        self.providers = providers
        self.report = report

    def batch_size(self, provider_name: str) -> int:
        provider = self.providers.get(provider_name)
        return provider.capabilities.batch_size if provider is not None else 1

    async def work(self, lane: Lane) -> None:
        while (item := await lane.queue.get()) is not None:
            envelope = self.prepare(lane, item)
            if envelope is None:
                lane.done_with_one()
                continue
            batch = [(item, envelope)]
            provider_name = lane.router.pick()
            # A provider with a batch API (FCM, Postmark) takes what is already queued in one call.
            while len(batch) < self.batch_size(provider_name) and (more := lane.queue.get_nowait()) is not None:
                extra = self.prepare(lane, more)
                if extra is None:
                    lane.done_with_one()
                else:
                    batch.append((more, extra))
            attempts = [queued.attempts + 1 for queued, _ in batch]
            envelopes = [e for _, e in batch]
            reroutable = len(lane.router.provider_names) > 1
            results = await self.dispatcher.transmit_batch(envelopes, provider_name, attempts, reroutable=reroutable)
            if results[0].state == "reroute":  # its breaker opened while they waited: the router knows better
                results = []
                while len(results) < len(envelopes):  # in calls the newly picked provider can take
                    provider_name = lane.router.pick()
                    done, size = len(results), self.batch_size(provider_name)
                    results += await self.dispatcher.transmit_batch(
                        envelopes[done : done + size], provider_name, attempts[done : done + size]
                    )
            for (queued, _), attempt, result in zip(batch, attempts, results, strict=True):
                self.settle(lane, queued, attempt, result)

    def settle(self, lane: Lane, item: Queued, attempt: int, result: Result) -> None:
        """Act on a dispatch's result."""
        self.verifier.forget(item.row["id"])
        if result.state == "stopped":
            return  # not attempted, or attempted and left pending: resume picks it up
        if result.state == "taken":  # another sender process claimed it first: it reports it
            lane.done_with_one()
            return
        if result.state == "later":  # not attempted: its endpoint asked for time
            self.feeder.later(lane, item, result.delay_s)
            return
        item.attempts = attempt
        if result.state == "retry":
            self.feeder.later(lane, item, result.delay_s)
            return
        self.report(lane.channel, result.progress)
        lane.done_with_one()

    def prepare(self, lane: Lane, item: Queued) -> Envelope | None:
        """Policy again (an opt-out lands before the very next message), then rendering. Returns the
        envelope to send, or None when the delivery was settled here (skipped, deferred, dead)."""
        decision = self.verifier.decide(item)
        if decision.action != "send":
            self.decided(lane, item.row["id"], decision)
            return None
        try:
            secrets, client_cert = item.endpoint
            envelope = self.builder.build(item.row, item.user, secrets, client_cert)
        except TemplateError as exc:
            self.template_failed(lane, item.row["id"], str(exc))
            return None
        self.verifier.remember(item)
        return envelope

    def decided(self, lane: Lane, delivery_id: int, decision: Decision) -> None:
        """A skip or deferral decided at dispatch, before any intent."""
        state = DeliveryState.skipped if decision.action == "skip" else DeliveryState.deferred
        until = iso(decision.until) if decision.until else None
        reason = decision.reason
        self.ledger.post(lambda conn: outbox.mark_decided(conn, delivery_id, state, reason, until))
        self.report(lane.channel, state)

    def template_failed(self, lane: Lane, delivery_id: int, message: str) -> None:
        self.ledger.post(
            lambda conn: outbox.mark_dead(
                conn,
                delivery_id,
                attempt=None,
                outcome=AttemptOutcome.template_error,
                latency_ms=None,
                code=None,
                error_class="TemplateError",
                message=message,
                envelope=None,
            )
        )
        self.report(lane.channel, DeliveryState.dead)
