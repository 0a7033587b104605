"""The data that flows through notifyctl: users, recipients, decisions, envelopes, results."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from notifyctl.states import AttemptOutcome as AttemptOutcome
from notifyctl.states import DeliveryState as DeliveryState
from notifyctl.states import RunState as RunState

M = TypeVar("M", bound=BaseModel)


_FIELD_COUNTS: dict[type[BaseModel], int] = {}


def trusted(cls: type[M], **values: Any) -> M:
    """An instance from values notifyctl produced or read back from its own tables, every field
    given: what `model_construct` builds, without its per-field bookkeeping (about 5× faster; it
    runs a few times per message). Nothing is validated."""
    count = _FIELD_COUNTS.get(cls)
    if count is None:  # `cls.model_fields` is a computed property on pydantic's classes: read it once
        count = _FIELD_COUNTS[cls] = len(cls.model_fields)
    if len(values) != count:
        missing = sorted(set(cls.model_fields) - set(values))
        raise TypeError(f"{cls.__name__}: every field must be given (missing: {missing})")
    instance = cls.__new__(cls)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


class Channel(enum.StrEnum):
    email = "email"
    sms = "sms"
    push = "push"
    inapp = "inapp"
    webhook = "webhook"


CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)


class User(BaseModel):
    """A user of the directory."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    push_tokens: list[str] = Field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: str | None = Field(default=None, repr=False)
    attributes: dict[str, Any] = Field(default_factory=dict)


class Recipient(BaseModel):
    """One validated audience row: a user id and/or inline contact fields, plus extra columns."""

    line: int
    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    push_tokens: list[str] = Field(default_factory=list)
    webhook_url: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def identity(self) -> str:
        """The key that makes two rows the same recipient."""
        if self.user_id:
            return f"user:{self.user_id}"
        if self.email:
            return f"email:{self.email}"
        if self.phone:
            return f"phone:{self.phone}"
        if self.push_tokens:
            return "push:" + ",".join(sorted(self.push_tokens))
        return f"webhook:{self.webhook_url}"


class Decision(BaseModel):
    """What policy says about one delivery."""

    action: str  # "send" | "skip" | "defer"
    reason: str | None = None
    until: datetime | None = None

    @classmethod
    def send(cls) -> Decision:
        return cls(action="send")

    @classmethod
    def skip(cls, reason: str) -> Decision:
        return cls(action="skip", reason=reason)

    @classmethod
    def defer(cls, until: datetime, reason: str) -> Decision:
        return cls(action="defer", reason=reason, until=until)


class Envelope(BaseModel):
    """One rendered message for one address on one channel, ready for a provider.

    `parts` holds the rendered channel parts (email: subject/text/html; sms: text;
    push: title/body/data; inapp: title/body/data; webhook: body). Secrets needed to send
    (webhook signing secrets) are never serialized: dead letters keep the envelope without them
    and a redrive resolves them again from the directory.
    """

    delivery_id: int
    run_id: str
    channel: str
    user_id: str | None
    address: str
    template: str
    template_version: str
    category: str
    idempotency_key: str
    message_id: str  # stable per delivery: webhook-id, email Message-ID, provider idempotency keys
    parts: dict[str, Any]
    headers: dict[str, str] = Field(default_factory=dict)
    signing_secrets: list[str] = Field(default_factory=list, exclude=True, repr=False)
    client_cert: str | None = Field(default=None, exclude=True, repr=False)
    # The recipient's time zone and phone, for the quiet-hours check a Redis worker makes right
    # before its claim; not kept in dead letters either.
    recipient_timezone: str | None = Field(default=None, exclude=True, repr=False)
    recipient_phone: str | None = Field(default=None, exclude=True, repr=False)


class SendResult(BaseModel):
    """A provider's answer to a successful send."""

    provider: str
    provider_message_id: str | None = None
    status_code: int | None = None
