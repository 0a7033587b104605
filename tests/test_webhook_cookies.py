"""Webhook deliveries keep no cookies: what one endpoint sets never travels to another one."""

from __future__ import annotations

from tests.provider_fixtures import OpenProvider, sink_envelope, webhook_settings
from tests.webhook_sink import WebhookSink, respond

pytest_plugins = ("tests.provider_fixtures",)


async def test_a_cookie_set_by_one_endpoint_is_not_sent_to_the_next(
    open_provider: OpenProvider, webhook_sink: WebhookSink
) -> None:
    provider = await open_provider("webhook", "webhook", webhook_settings())
    webhook_sink.script(respond(200, headers={"Set-Cookie": "session=tenant-a-secret; Path=/"}))
    await provider.send(sink_envelope(webhook_sink.url("/tenant-a").replace("127.0.0.1", "localhost"), 1))
    await provider.send(sink_envelope(webhook_sink.url("/tenant-b").replace("127.0.0.1", "localhost"), 2))
    first, second = webhook_sink.wait_for(2)
    assert first.verified and second.verified
    assert "cookie" not in {name.lower() for name in second.headers}
