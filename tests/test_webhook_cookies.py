"""Webhook deliveries keep no cookies: what one endpoint sets never travels to another one."""

from __future__ import annotations

from notifyctl.models import Envelope
from tests.provider_fixtures import OpenProvider, webhook_settings
from tests.webhook_sink import SINK_SECRET, WebhookSink, respond

pytest_plugins = ("tests.provider_fixtures",)


def envelope(address: str, delivery_id: int) -> Envelope:
    return Envelope(
        delivery_id=delivery_id,
        run_id="run",
        channel="webhook",
        user_id=f"u{delivery_id}",
        address=address,
        template="t",
        template_version="v",
        category="transactional",
        idempotency_key=f"k{delivery_id}",
        message_id=f"msg_{delivery_id}",
        parts={"body": {"n": delivery_id}},
        signing_secrets=[SINK_SECRET],
    )


async def test_a_cookie_set_by_one_endpoint_is_not_sent_to_the_next(
    open_provider: OpenProvider, webhook_sink: WebhookSink
) -> None:
    provider = await open_provider("webhook", "webhook", webhook_settings())
    webhook_sink.script(respond(200, headers={"Set-Cookie": "session=tenant-a-secret; Path=/"}))
    await provider.send(envelope(webhook_sink.url("/tenant-a").replace("127.0.0.1", "localhost"), 1))
    await provider.send(envelope(webhook_sink.url("/tenant-b").replace("127.0.0.1", "localhost"), 2))
    first, second = webhook_sink.wait_for(2)
    assert first.verified and second.verified
    assert "cookie" not in {name.lower() for name in second.headers}
