"""A lane's dispatchers: take a queued delivery, decide, render, dispatch, and act on the result.

Each dispatcher task takes the next delivery off its lane's queue, decides it again on its page's
policy answers (skip and defer are settled here, with no attempt), renders it, and hands it to the
backend's Dispatcher (the in-process Sender, or the publisher to the Redis workers) together with
what is already queued when the chosen provider has a batch API. What comes back is settled,
scheduled again (a retry), or left for resume (stopping).
"""

from __future__ import annotations

from collections.abc import Callable

from notifyctl.addresses import push_service
from notifyctl.errors import TemplateError
from notifyctl.models import AttemptOutcome, Decision, DeliveryState, Envelope
from notifyctl.pipeline.backend import Dispatcher, Result
from notifyctl.pipeline.envelope import EnvelopeBuilder
from notifyctl.pipeline.lanes import Feeder, Lane, Queued
from notifyctl.pipeline.router import Router
from notifyctl.pipeline.verify import Verifier
from notifyctl.providers.base import Provider
from notifyctl.store import outbox
from notifyctl.store.db import iso
from notifyctl.store.ledger import Ledger

Report = Callable[[str, str], None]  # (channel, state): the engine's progress


def router_for(lane: Lane, envelope: Envelope) -> Router | None:
    """The router of a delivery: its lane's, narrowed for push to its token's service (None: no provider)."""
    if lane.channel != "push":
        return lane.router
    return lane.router.for_service(push_service(envelope.address))


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
        carried: tuple[Queued, Envelope] | None = None  # taken for a batch, but another router's
        while True:
            if carried is not None:
                (item, envelope), carried = carried, None
            else:
                if (taken := await lane.queue.get()) is None:
                    break
                if (prepared := self.prepare(lane, taken)) is None:
                    lane.done_with_one()
                    continue
                item, envelope = taken, prepared
            router = router_for(lane, envelope)
            if router is None:
                self.no_provider(lane, item, envelope)
                continue
            batch = [(item, envelope)]
            provider_name = router.pick()
            # A provider with a batch API (FCM, APNs, Postmark) takes what is already queued in one call.
            while len(batch) < self.batch_size(provider_name) and (more := lane.queue.get_nowait()) is not None:
                extra = self.prepare(lane, more)
                if extra is None:
                    lane.done_with_one()
                elif router_for(lane, extra) is not router:  # another push service: the next batch's
                    carried = (more, extra)
                    break
                else:
                    batch.append((more, extra))
            attempts = [queued.attempts + 1 for queued, _ in batch]
            envelopes = [e for _, e in batch]
            reroutable = len(router.provider_names) > 1
            results = await self.dispatcher.transmit_batch(envelopes, provider_name, attempts, reroutable=reroutable)
            if results[0].state == "reroute":  # its breaker opened while they waited: the router knows better
                results = []
                while len(results) < len(envelopes):  # in calls the newly picked provider can take
                    provider_name = router.pick()
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

    def no_provider(self, lane: Lane, item: Queued, envelope: Envelope) -> None:
        """A push token of a service no provider of the channel serves: dead, never attempted."""
        self.verifier.forget(item.row["id"])
        service = push_service(envelope.address)
        message = (
            f"no provider of [channels.{lane.channel}] sends to {service} tokens: add a provider of type "
            f"'{service}' to the channel, then redrive the dead letters"
        )
        self.ledger.post(
            lambda conn: outbox.mark_dead(
                conn,
                envelope.delivery_id,
                attempt=None,
                outcome=AttemptOutcome.permanent,
                latency_ms=None,
                code="no_provider_for_service",
                error_class="ConfigError",
                message=message,
                envelope=envelope.model_dump(mode="json"),
            )
        )
        self.report(lane.channel, DeliveryState.dead)
        lane.done_with_one()

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
