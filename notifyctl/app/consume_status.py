"""`notifyctl consume --status`: the consumer group's lag per partition (end offset − committed)."""

from __future__ import annotations

from dataclasses import dataclass

from notifyctl.errors import NotifyctlError
from notifyctl.intake import kafka
from notifyctl.settings import Settings


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group has committed nothing on it yet
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.committed or 0))


async def group_lag(settings: Settings, where: kafka.KafkaTarget) -> list[PartitionLag]:
    """The group's committed offset and the end offset of each partition of the topic."""
    from aiokafka import TopicPartition

    # Not a member: it joins no group and commits nothing, it only reads the group's offsets.
    consumer = kafka.consumer(settings, where, subscribe=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = consumer.partitions_for_topic(where.topic)
        if not partitions:
            raise NotifyctlError(f"no topic '{where.topic}' on {', '.join(where.bootstrap_servers)}")
        tps = [TopicPartition(where.topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        return [PartitionLag(tp.partition, await consumer.committed(tp), int(ends[tp])) for tp in tps]
    finally:
        await consumer.stop()
