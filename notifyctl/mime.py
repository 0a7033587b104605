"""RFC 5322 messages from email envelopes; shared by the outbox, SES and SMTP providers."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from notifyctl.errors import PermanentError
from notifyctl.models import Envelope

# 7bit keeps bodies safe for relays without 8BITMIME; refold_source="none" keeps raw ASCII
# headers (List-Unsubscribe URLs) on one line instead of RFC 2047-encoding them, which would
# make them unreadable for mailbox providers that act on them.
MESSAGE_POLICY = email_policy.SMTP.clone(cte_type="7bit", refold_source="none")

# Headers the builder owns: a template or pipeline header may not replace them (an injected Bcc
# or a second To would add recipients).
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "sender",
        "return-path",
    }
)

_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'
_ID_LEFT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")  # dot-atom-text
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_MAX_LINE = 998


def _refuse(message: str) -> PermanentError:
    return PermanentError(message, code="bad_header")


def _check_value(name: str, value: str) -> None:
    if any(char in value for char in "\r\n\0"):
        raise _refuse(f"header {name} contains a line break or NUL (header injection)")


def _single_address(name: str, value: str) -> Address:
    _check_value(name, value)
    probe = EmailMessage(policy=MESSAGE_POLICY)
    try:
        probe[name] = value
        header = probe[name]
        addresses = header.addresses
    except (ValueError, IndexError, AttributeError) as exc:
        raise _refuse(f"header {name} is not a valid address: {exc}") from exc
    if len(addresses) != 1 or header.defects or "@" not in addresses[0].addr_spec:
        raise _refuse(f"header {name} must hold exactly one valid address")
    address: Address = addresses[0]
    return address


def message_id_header(message_id: str, domain: str) -> str:
    """`<message_id@domain>`: the same on every attempt, so receivers can spot a re-send."""
    if not _ID_LEFT.fullmatch(message_id) or not _DOMAIN.fullmatch(domain):
        raise _refuse(f"cannot form a Message-ID from {message_id!r} and {domain!r}")
    return f"<{message_id}@{domain}>"


def _add_extra_header(message: EmailMessage, name: str, value: str) -> None:
    if not _HEADER_NAME.fullmatch(name):
        raise _refuse(f"invalid header name {name!r}")
    if name.lower() in RESERVED_HEADERS:
        raise _refuse(f"header {name} is set by notifyctl and cannot be overridden")
    _check_value(name, value)
    if value.isascii():
        if len(name) + 2 + len(value) > _MAX_LINE:
            raise _refuse(f"header {name} is longer than {_MAX_LINE} characters")
        message.set_raw(name, value)
    else:
        message[name] = value


def build_message(
    envelope: Envelope, from_address: str, message_id_domain: str, *, now: datetime | None = None
) -> EmailMessage:
    """The RFC 5322 message for an email envelope: text and HTML alternatives, stable Message-ID.

    Raises PermanentError(code="bad_header") on header injection or malformed addresses, and
    PermanentError(code="empty_body") when the envelope has neither text nor HTML.
    """
    parts = envelope.parts
    subject = str(parts.get("subject") or "")
    text = parts.get("text")
    html = parts.get("html")
    if not text and not html:
        raise PermanentError("email has neither a text nor an HTML part", code="empty_body")

    message = EmailMessage(policy=MESSAGE_POLICY)
    _check_value("Subject", subject)
    message["Subject"] = subject
    message["From"] = _single_address("From", from_address)
    message["To"] = _single_address("To", envelope.address)
    message["Date"] = format_datetime((now or datetime.now(UTC)).astimezone(UTC))
    message["Message-ID"] = message_id_header(envelope.message_id, message_id_domain)
    for name, value in envelope.headers.items():
        _add_extra_header(message, name, value)

    if text and html:
        message.set_content(str(text))
        message.add_alternative(str(html), subtype="html")
    elif text:
        message.set_content(str(text))
    else:
        message.set_content(str(html), subtype="html")
    return message


def domain_of(address: str) -> str:
    """The domain of a From address ("Name <user@example.com>" → "example.com")."""
    return _single_address("From", address).domain
