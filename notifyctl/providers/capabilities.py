"""What a provider declares it cannot take, enforced right before the call (the pipeline calls `check`).

    fitted = check(envelope, provider.capabilities)
    if isinstance(fitted, PermanentError):
        ...  # never sent: a dead letter with fitted.code
    else:
        await provider.send(fitted)

One function, so that every path to a provider (the engine, sender processes, Redis workers,
redrive) refuses the same envelopes for the same reasons, and no provider repeats the checks:

- `channels`: an envelope of another channel is refused (`wrong_channel`); a route that sends,
  say, SMS through an email provider is a configuration mistake, and this is its last guard.
- `supports_html`: a provider without HTML gets the envelope without its `html` part, the text
  part being what it sends; an envelope whose only body is HTML is refused (`html_unsupported`).
- `max_body_chars`: the body text (the `text` part, or `body` where there is no `text`: SMS and
  email text, push and in-app body) in characters; over it is `too_long`.
- `max_payload_bytes`: the rendered parts, after the HTML decision, as compact JSON in UTF-8 (for
  push the title, body and data FCM counts toward its 4096 bytes, measured as the template
  renderer measures them; for email a lower bound of the MIME message's size); over it is
  `payload_too_large`.

`batch_size` is read by the engine when it groups deliveries, and `idempotent` by the in-doubt
re-send decisions; neither is about one envelope, so neither is checked here.
"""

from __future__ import annotations

import orjson

from notifyctl.errors import PermanentError
from notifyctl.models import Envelope
from notifyctl.providers.base import Capabilities

BODY_PARTS = ("text", "body")  # the first of these that is a string is the body text


def payload_bytes(envelope: Envelope) -> int:
    """The size of the envelope's rendered parts as compact UTF-8 JSON."""
    return len(orjson.dumps(envelope.parts, default=str, option=orjson.OPT_NON_STR_KEYS))


def body_text(envelope: Envelope) -> str | None:
    """The envelope's body text: its `text` part, or its `body` part where it has no text."""
    for name in BODY_PARTS:
        value = envelope.parts.get(name)
        if isinstance(value, str):
            return value
    return None


def check(envelope: Envelope, capabilities: Capabilities) -> Envelope | PermanentError:
    """The envelope the provider may be given (without its HTML part where the provider has no
    HTML), or the PermanentError that keeps it from being sent."""
    if envelope.channel not in capabilities.channels:
        return PermanentError(
            f"a {envelope.channel} message cannot go through a provider for {', '.join(capabilities.channels)}",
            code="wrong_channel",
        )
    if not capabilities.supports_html and envelope.parts.get("html"):
        if not envelope.parts.get("text"):
            return PermanentError(
                "the message has only an HTML body and the provider sends no HTML", code="html_unsupported"
            )
        parts = {name: value for name, value in envelope.parts.items() if name != "html"}
        envelope = envelope.model_copy(update={"parts": parts})
    if capabilities.max_body_chars is not None:
        text = body_text(envelope)
        if text is not None and len(text) > capabilities.max_body_chars:
            return PermanentError(
                f"the body is {len(text)} characters, over the provider's {capabilities.max_body_chars}",
                code="too_long",
            )
    if capabilities.max_payload_bytes is not None:
        size = payload_bytes(envelope)
        if size > capabilities.max_payload_bytes:
            return PermanentError(
                f"the message is {size} bytes, over the provider's {capabilities.max_payload_bytes}",
                code="payload_too_large",
            )
    return envelope
