"""The Kafka side of `notifyctl consume`: aiokafka clients from the [kafka] settings, and dead letters.

Imported only by `consume`, so nothing else pays for aiokafka. The TLS and SASL options are passed
to aiokafka as it documents them; the tests run against a plaintext broker only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from notifyctl.settings import KafkaSettings, Settings

# Headers of a dead-lettered message: why, and where it came from (its key and value are kept).
REASON_HEADER = "notifyctl-reason"
SOURCE_HEADERS = ("notifyctl-topic", "notifyctl-partition", "notifyctl-offset")


@dataclass(frozen=True)
class KafkaTarget:
    """Where `consume` reads: the [kafka] table with the command line's options over it."""

    bootstrap_servers: list[str]
    topic: str
    group: str
    dlq_topic: str


def target(
    settings: KafkaSettings, servers: str | None, topic: str | None, group: str | None, dlq: str | None
) -> KafkaTarget:
    """The command line's options over the [kafka] table; the dead-letter topic defaults to TOPIC.dlq."""
    from notifyctl.errors import ConfigError

    bootstrap = [part.strip() for part in servers.split(",") if part.strip()] if servers else settings.bootstrap_servers
    if not bootstrap:
        raise ConfigError("no Kafka broker: pass --kafka HOST:PORT or set [kafka] bootstrap_servers")
    chosen_topic = topic or settings.topic
    return KafkaTarget(
        bootstrap, chosen_topic, group or settings.group, dlq or settings.dlq_topic or f"{chosen_topic}.dlq"
    )


def client_options(settings: Settings, bootstrap: list[str]) -> dict[str, Any]:
    """The connection options every aiokafka client of `consume` shares (TLS and SASL included)."""
    kafka = settings.kafka
    options: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        def path(value: Any) -> str | None:
            return str(settings.path(value)) if value else None

        options["ssl_context"] = create_ssl_context(
            cafile=path(kafka.ssl_cafile), certfile=path(kafka.ssl_certfile), keyfile=path(kafka.ssl_keyfile)
        )
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_plain_username
        options["sasl_plain_password"] = kafka.sasl_plain_password
    return options


def consumer(settings: Settings, where: KafkaTarget, *, subscribe: bool = True) -> AIOKafkaConsumer:
    """A group member that commits by hand (offsets move only once the outbox holds the events).
    A group with no committed offset starts at the topic's beginning: nothing emitted before the
    first start is missed."""
    from aiokafka import AIOKafkaConsumer

    topics = [where.topic] if subscribe else []
    return AIOKafkaConsumer(
        *topics,
        group_id=where.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.kafka.max_batch,
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
        **client_options(settings, where.bootstrap_servers),
    )


def producer(settings: Settings, where: KafkaTarget) -> AIOKafkaProducer:
    """The dead-letter topic's producer: a dead letter is acknowledged by every in-sync replica
    before the offset past it is committed."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(acks="all", **client_options(settings, where.bootstrap_servers))


def dead_letter_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: the reason (at most 1,000 characters) and the message's origin."""
    origin = (topic, str(partition), str(offset))
    return [
        (REASON_HEADER, reason[:1000].encode()),
        *((k, v.encode()) for k, v in zip(SOURCE_HEADERS, origin, strict=True)),
    ]
