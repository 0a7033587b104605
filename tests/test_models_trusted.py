"""`models.trusted` builds what pydantic's `model_construct` builds (it runs per message instead)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from notifyctl.models import Envelope, SendResult, User, trusted

ENVELOPE: dict[str, Any] = dict(
    delivery_id=7,
    run_id="run-1",
    channel="webhook",
    user_id="u1",
    address="https://example.com/hook",
    template="welcome",
    template_version="abc",
    category="marketing",
    idempotency_key="key",
    message_id="msg_1",
    parts={"body": {"a": 1}},
    headers={"X": "y"},
    signing_secrets=["whsec_secret"],
    client_cert=None,
    recipient_timezone="Europe/Paris",
    recipient_phone=None,
)
USER: dict[str, Any] = dict(
    user_id="u1",
    email="a@example.com",
    phone=None,
    locale="en",
    timezone="Europe/Paris",
    push_tokens=["t1"],
    webhook_url="https://example.com/hook",
    webhook_secret="whsec_x",
    attributes={"first_name": "Ada"},
)
RESULT: dict[str, Any] = dict(provider="webhook", provider_message_id="m", status_code=204)


@pytest.mark.parametrize(("cls", "values"), [(Envelope, ENVELOPE), (User, USER), (SendResult, RESULT)])
def test_trusted_equals_model_construct(cls: type[BaseModel], values: dict[str, Any]) -> None:
    fast, slow = trusted(cls, **values), cls.model_construct(**values)
    assert fast == slow
    assert fast.model_dump(mode="json") == slow.model_dump(mode="json")
    assert fast.model_fields_set == slow.model_fields_set
    assert repr(fast) == repr(slow)  # secrets stay out of repr
    assert fast.model_copy(update={"user_id": "u2"} if "user_id" in values else {}).model_dump()


def test_secrets_are_not_serialized_from_a_trusted_envelope() -> None:
    dumped = trusted(Envelope, **ENVELOPE).model_dump(mode="json")
    assert "signing_secrets" not in dumped and "client_cert" not in dumped


def test_trusted_refuses_a_missing_field() -> None:
    values = dict(ENVELOPE)
    del values["headers"]
    with pytest.raises(TypeError, match="headers"):
        trusted(Envelope, **values)
