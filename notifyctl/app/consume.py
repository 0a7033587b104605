"""`notifyctl consume`: a Kafka topic of NotificationRequested events as a front door.

The consumer feeds the same long-lived service run as `serve`'s API (server/service.py, kind
"kafka"): each batch of messages is planned into the outbox in one transaction, and only then are
the batch's offsets committed (at least once). An event seen again, after a crash, a rebalance or a
replay from the beginning, finds its idempotency keys taken and is `skipped: duplicate`. A message
that is not a valid event (bad JSON, a missing field, an unknown template, a category it may not
take) goes to the dead-letter topic with the reason in its headers, and its partition moves on.
While the run's unsettled deliveries are at `[kafka] max_pending` the partitions are paused, and
resumed once they are below it. A stop (SIGTERM) plans and commits the batch in hand, lets the
sends in flight finish, and leaves the rest pending in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from notifyctl.app.checks import category_for, channels_for
from notifyctl.app.context import Context
from notifyctl.errors import InputError, NotifyctlError, TemplateError
from notifyctl.intake import kafka
from notifyctl.intake.events import parse_event
from notifyctl.pipeline.planner import PlanItem
from notifyctl.server.service import DeliveryService
from notifyctl.store import kafka_lag

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

log = logging.getLogger("notifyctl.consume")

KAFKA_RUN_KIND = "kafka"
POLL_MS = 200


@dataclass
class ConsumeStats:
    """What one `consume` did, and the lag it last saw (for --metrics-port)."""

    run_id: str = ""
    consumed: int = 0
    planned: int = 0
    dead_lettered: int = 0
    pauses: int = 0
    paused: bool = False
    lag: dict[int, int] = field(default_factory=dict)  # partition → end offset - committed offset


def event_item(ctx: Context, raw: bytes | None) -> PlanItem:
    """The plan of one message, or InputError/TemplateError saying why it is dead-lettered."""
    event = parse_event(raw)
    template = ctx.templates.get(event.template)
    channels = channels_for(template, event.channels, ctx.settings)
    category = category_for(ctx.settings, template, event.category, channels)
    return PlanItem(
        line=0,
        end_offset=0,
        template=template.name,
        template_version=template.version,
        category=category,
        event_id=event.event_id,
        channels=channels,
        user_id=event.user_id,
        data=event.data,
    )


class KafkaIntake:
    """One consumer of the topic, feeding one service run."""

    def __init__(self, ctx: Context, where: kafka.KafkaTarget, *, from_beginning: bool = False) -> None:
        self.ctx = ctx
        self.where = where
        self.from_beginning = from_beginning
        self.stats = ConsumeStats()
        self.service = DeliveryService(ctx, kind=KAFKA_RUN_KIND)
        self._rewound: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None) -> ConsumeStats:
        """Consume until `stop` is set; then commit what was planned and stop the engine."""
        from aiokafka import ConsumerRebalanceListener

        intake = self

        class Rewind(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                return None

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await intake._rewind(set(assigned))

        consumer = kafka.consumer(self.ctx.settings, self.where, subscribe=False)
        producer = kafka.producer(self.ctx.settings, self.where)
        self._consumer = consumer
        await self.service.start()
        self.stats.run_id = self.service.run_id
        try:
            await producer.start()
            await consumer.start()
            consumer.subscribe([self.where.topic], listener=Rewind())
            if on_ready is not None:
                on_ready(self.service.run_id)
            while not stop.is_set():
                if not self.service.running:
                    raise NotifyctlError("the delivery engine stopped")
                self._apply_backpressure(consumer)
                batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=self.ctx.settings.kafka.max_batch)
                if batch:
                    await self._handle(consumer, producer, batch)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            await self.service.stop(self.ctx.settings.server.shutdown_timeout_s)
        return self.stats

    async def _rewind(self, assigned: set[TopicPartition]) -> None:
        """--from-beginning: each partition is read from its start once, at its first assignment."""
        if not self.from_beginning or self._consumer is None:
            return
        fresh = assigned - self._rewound
        if fresh:
            await self._consumer.seek_to_beginning(*fresh)
            self._rewound |= fresh

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        """Pause every assigned partition while the run's backlog is at the bound, resume below it."""
        over = self.service.unsettled() >= self.ctx.settings.kafka.max_pending
        assigned = consumer.assignment()
        if over:
            if not self.stats.paused:
                self.stats.pauses += 1
                log.info("paused: outbox backlog at [kafka] max_pending", extra={"run_id": self.stats.run_id})
            self.stats.paused = True
            consumer.pause(*assigned)  # again after a rebalance: new partitions come unpaused
        elif self.stats.paused:
            self.stats.paused = False
            consumer.resume(*consumer.paused())
            log.info("resumed: outbox backlog below [kafka] max_pending", extra={"run_id": self.stats.run_id})

    async def _handle(
        self, consumer: AIOKafkaConsumer, producer: Any, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> None:
        """Plan a batch into the outbox, dead-letter what cannot be planned, then commit its offsets."""
        items: list[PlanItem] = []
        dead: list[tuple[ConsumerRecord[Any, Any], str]] = []
        for messages in batch.values():
            for message in messages:
                self.stats.consumed += 1
                try:
                    items.append(event_item(self.ctx, message.value))
                except (InputError, TemplateError) as exc:
                    dead.append((message, str(exc)))
        if items:
            self.service.submit(items)  # one transaction: committed to the outbox on return
            self.stats.planned += len(items)
        for message, reason in dead:
            headers = kafka.dead_letter_headers(reason, message.topic, message.partition, message.offset)
            await producer.send_and_wait(self.where.dlq_topic, message.value, key=message.key, headers=headers)
            self.stats.dead_lettered += 1
            log.warning(
                "dead-lettered",
                extra={"partition": message.partition, "offset": message.offset, "reason": reason[:200]},
            )
        offsets = {tp: messages[-1].offset + 1 for tp, messages in batch.items() if messages}
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # a rebalance took the partition: its new owner sees duplicates only
            log.warning("offset commit failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        known: dict[int, tuple[int, int]] = {}
        for tp, offset in offsets.items():
            end = consumer.highwater(tp)
            if end is not None:
                self.stats.lag[tp.partition] = max(0, end - offset)
                known[tp.partition] = (offset, end)
        if known:  # for `serve`'s /metrics on the same database
            kafka_lag.record(self.ctx.conn, self.where.group, self.where.topic, known)
