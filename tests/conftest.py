"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.webhook_sink import WebhookSink


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    """A Standard Webhooks receiver on 127.0.0.1 in its own thread; see tests/webhook_sink.py."""
    with WebhookSink() as sink:
        yield sink
