"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.webhook_sink import WebhookSink

if TYPE_CHECKING:
    from tests.kafka_broker import TansuBroker


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    """A Standard Webhooks receiver on 127.0.0.1 in its own thread; see tests/webhook_sink.py."""
    with WebhookSink() as sink:
        yield sink


@pytest.fixture
def kafka_broker() -> Iterator[TansuBroker]:
    """A Kafka-protocol broker (Tansu, memory-only) on a free port; see tests/kafka_broker.py."""
    from tests.kafka_broker import TansuBroker  # here: aiokafka only for the tests that use it

    with TansuBroker() as broker:
        yield broker
