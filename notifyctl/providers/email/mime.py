"""RFC 5322 messages from email envelopes; shared by the outbox, SES and SMTP providers.

Two builders, same checks, same message:

- `build_message` returns an `EmailMessage` (policy.SMTP, 7-bit): the reference, for callers
  that want the object (≈3 ms with `as_bytes()`).
- `render_email` / `build_message_bytes` write the bytes directly (≈0.07 ms): what the providers
  send. Checks run in the same order and raise the same errors. Headers the standard library
  writes in its own particular way (display names, subjects with control characters, long ASCII
  words) are folded by it, one header at a time; a non-ASCII extra header or anything that does
  not encode sends the whole message through `build_message(...).as_bytes()`. One deliberate
  difference: a long non-ASCII subject is written as it is, where CPython's folder may add a
  space or cut an encoded-word inside a character. tests/test_mime_fast.py holds the proof.
"""

from __future__ import annotations

import binascii
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from typing import Any, TypeAlias

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
# Everything str.splitlines() breaks a line at, and NUL. The standard library writes a raw
# header value line by line (`value.splitlines()`), so a vertical tab or form feed in an extra
# header would start a new header line just like CR or LF.
_LINE_BREAK = re.compile("[\r\n\0\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def _refuse(message: str) -> PermanentError:
    return PermanentError(message, code="bad_header")


def _check_value(name: str, value: str) -> None:
    if _LINE_BREAK.search(value):
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


def _email_parts(envelope: Envelope) -> tuple[str, Any, Any]:
    """(subject, text, html) of an email envelope, the subject checked for line breaks; raises
    PermanentError(code="empty_body") when there is neither text nor HTML."""
    parts = envelope.parts
    subject = str(parts.get("subject") or "")
    text, html = parts.get("text"), parts.get("html")
    if not text and not html:
        raise PermanentError("email has neither a text nor an HTML part", code="empty_body")
    _check_value("Subject", subject)
    return subject, text, html


def _date_header(now: datetime | None) -> str:
    return format_datetime((now or datetime.now(UTC)).astimezone(UTC))


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """`_date_header(None)`, formatted once per second (the header has no fraction of a second)."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
    return _date_cache[1]


def build_message(
    envelope: Envelope, from_address: str, message_id_domain: str, *, now: datetime | None = None
) -> EmailMessage:
    """The RFC 5322 message for an email envelope: text and HTML alternatives, stable Message-ID.

    Raises PermanentError(code="bad_header") on header injection or malformed addresses, and
    PermanentError(code="empty_body") when the envelope has neither text nor HTML.
    """
    subject, text, html = _email_parts(envelope)
    message = EmailMessage(policy=MESSAGE_POLICY)
    message["Subject"] = subject
    message["From"] = _single_address("From", from_address)
    message["To"] = _single_address("To", envelope.address)
    message["Date"] = _date_header(now)
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


@lru_cache(maxsize=256)
def domain_of(address: str) -> str:
    """The domain of a From address ("Name <user@example.com>" → "example.com")."""
    return _single_address("From", address).domain


# -- the direct writer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """An email on the wire: 7-bit bytes with CRLF line ends, and its SMTP envelope."""

    data: bytes
    sender: str  # addr-spec of From (SMTP MAIL FROM)
    recipient: str  # addr-spec of To (SMTP RCPT TO)
    message_id: str  # without the angle brackets: "message_id@domain"


_FOLD_AT = 78  # policy.SMTP's max_line_length: where the standard library folds headers and bodies
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# A plain addr-spec (dot-atom local part, host name): the standard library writes it as given.
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*")
_PLAIN_ID = re.compile(rf"<{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*>")
_PRINTABLE_ASCII = re.compile(r"[ -~]*")
_SPACE_RUNS = re.compile(r"( +)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CRLF = b"\r\n"
_QP_LITERAL = bytes(range(0x20, 0x7F)).replace(b"=", b"") + b"\t\r\n"  # bytes quoted-printable keeps

# RFC 2047 "Q": the characters email.quoprimime leaves as they are in a header; space is "_".
_Q_SAFE = frozenset(b"-!*+/" + b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_Q_MAP = tuple(chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256))
_EW_OVERHEAD = len("=?utf-8?q??=")


def _stdlib_header(name: str, value: object) -> bytes:
    """One header exactly as `EmailMessage` + MESSAGE_POLICY would write it."""
    header = MESSAGE_POLICY.header_factory(name, value)
    folded: str = header.fold(policy=MESSAGE_POLICY)
    return folded.encode("ascii", "surrogateescape")


def _fold_ascii(label: str, value: str) -> str | None:
    """`label + value` folded as the standard library folds printable ASCII text, or None.

    Its rules (email._header_value_parser._refold_parse_tree): the whole value on the label's
    line if it fits; else on a line of its own if it fits there (the line break then takes the
    place of the space after the label, so a reader sees one leading space more); else word by
    word, each word or run of spaces that does not fit starting a new line, taking over the one
    space that ended the previous line. A word too long for any line is left to it (None).
    """
    if not value:
        return label.rstrip(" ") + "\r\n"
    line = label + value
    if len(line) <= _FOLD_AT:
        return line + "\r\n"
    if len(value) + 1 <= _FOLD_AT:
        return f"{label[:-1]}\r\n {value}\r\n"
    lines = [label]
    for token in _SPACE_RUNS.split(value):
        if not token:
            continue
        if len(token) <= _FOLD_AT - len(lines[-1]):
            lines[-1] += token
            continue
        if len(token) + 1 > _FOLD_AT:
            return None
        current = lines[-1]
        if current and current[-1] == " ":
            lines[-1] = current[:-1]
            lines.append(" " + token)
        elif token[0] == " ":
            lines.append(token)
        else:
            return None  # not reached: a word always follows spaces or the label's space
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(label: str, value: str) -> str:
    """`label` + value as RFC 2047 UTF-8 encoded-words, each whole characters, lines ≤ 78."""
    data = value.encode("utf-8")
    q_length = sum(len(_Q_MAP[byte]) for byte in data)
    use_b = 4 * ((len(data) + 2) // 3) < q_length
    prefix = "=?utf-8?b?" if use_b else "=?utf-8?q?"

    def encode(chunk: bytes) -> str:
        if use_b:
            return binascii.b2a_base64(chunk, newline=False).decode("ascii")
        return "".join([_Q_MAP[byte] for byte in chunk])

    budget = _FOLD_AT - len(label) - _EW_OVERHEAD
    if (4 * ((len(data) + 2) // 3) if use_b else q_length) <= budget:
        return f"{label}{prefix}{encode(data)}?=\r\n"
    chunks: list[bytes] = []
    current = bytearray()
    used = 0
    for char in value:
        encoded = char.encode("utf-8")
        if use_b:
            width = 4 * ((len(current) + len(encoded) + 2) // 3) - used
        else:
            width = sum(len(_Q_MAP[byte]) for byte in encoded)
        if current and used + width > budget:
            chunks.append(bytes(current))
            current = bytearray()
            used = 0
            budget = _FOLD_AT - 1 - _EW_OVERHEAD
            if use_b:
                width = 4 * ((len(encoded) + 2) // 3)
        current += encoded
        used += width
    chunks.append(bytes(current))
    words = [f"{prefix}{encode(chunk)}?=" for chunk in chunks]
    return label + "\r\n ".join(words) + "\r\n"


# A header line, or a header the standard library writes (folded last, as `as_bytes()` does).
_Line: TypeAlias = bytes | tuple[str, object]


def _subject_header(subject: str) -> _Line:
    label = "Subject: "
    if "=?" not in subject:  # the standard library would decode an encoded-word found in the text
        if subject.isascii():
            if _PRINTABLE_ASCII.fullmatch(subject):
                folded = _fold_ascii(label, subject)
                if folded is not None:
                    return folded.encode("ascii")
        elif (
            not subject.startswith(" ")
            and not _CONTROL.search(subject)
            # A leading ASCII word too long for the label's line moves to the next one (above).
            and not (len(first := subject.split(" ", 1)[0]) > _FOLD_AT - len(label) and first.isascii())
        ):
            return _encoded_words(label, subject).encode("ascii")
    return ("Subject", subject)


@lru_cache(maxsize=64)
def _from_header(from_address: str) -> tuple[bytes, str]:
    """The From header and its addr-spec, validated once per configured address."""
    address = _single_address("From", from_address)
    return _stdlib_header("From", address), address.addr_spec


def _to_header(address: str) -> tuple[_Line, str]:
    if len(address) <= _FOLD_AT - 4 and "=?" not in address and _PLAIN_ADDRESS.fullmatch(address):
        return f"To: {address}\r\n".encode("ascii"), address
    parsed = _single_address("To", address)  # display names, quoted or international addresses
    return ("To", parsed), parsed.addr_spec


def _encode_body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, body) as email.contentmanager chooses them for a 7-bit policy.

    Lines end in CRLF and the body ends with one; 7bit when every line is ASCII and at most 78
    bytes long, else quoted-printable or base64, whichever is shorter on the first ten lines.
    """
    lines = text.encode("utf-8").splitlines()
    body = _CRLF.join(lines) + _CRLF
    if max(map(len, lines), default=0) <= _FOLD_AT and body.isascii():
        return b"7bit", body
    sniff = body if len(lines) <= 10 else _CRLF.join(lines[:10]) + _CRLF
    # The standard library encodes those lines both ways; estimating the quoted-printable length
    # (3 characters per byte to escape, a soft line break every 76) is close enough and cheaper.
    length = len(sniff) - min(len(lines), 10) + 2 * len(sniff.translate(None, _QP_LITERAL))
    if length + 2 * (length // 76) > 4 * ((len(sniff) + 2) // 3) + 1:
        step = _FOLD_AT // 4 * 3  # 57 bytes: 76 characters per line
        encoded = [binascii.b2a_base64(body[i : i + step], newline=False) for i in range(0, len(body), step)]
        return b"base64", _CRLF.join(encoded) + _CRLF
    return b"quoted-printable", binascii.b2a_qp(body, istext=True)


def _boundary() -> bytes:
    # "=_" never occurs in quoted-printable or base64; a 7bit body is searched for the boundary.
    return b"=_%032x" % random.getrandbits(128)


def _part_headers(subtype: bytes, cte: bytes) -> bytes:
    return b"Content-Type: text/" + subtype + b'; charset="utf-8"\r\nContent-Transfer-Encoding: ' + cte + _CRLF


class _Unusual(Exception):
    """Raised inside the direct writer: let the standard library build this message."""


def _render(envelope: Envelope, from_address: str, message_id_domain: str, now: datetime | None) -> RenderedEmail:
    subject, text, html = _email_parts(envelope)
    from_line, sender = _from_header(from_address)
    to_line, recipient = _to_header(envelope.address)
    date = _date_now() if now is None else _date_header(now)
    message_id = message_id_header(envelope.message_id, message_id_domain)
    id_line: _Line = ("Message-ID", message_id)
    if _PLAIN_ID.fullmatch(message_id) and len(message_id) <= _MAX_LINE - 12:
        id_line = f"Message-ID: {message_id}\r\n".encode("ascii")
    lines: list[_Line] = [("Subject", subject), from_line, to_line, f"Date: {date}\r\n".encode("ascii"), id_line]
    for name, value in envelope.headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise _refuse(f"invalid header name {name!r}")
        if name.lower() in RESERVED_HEADERS:
            raise _refuse(f"header {name} is set by notifyctl and cannot be overridden")
        _check_value(name, value)
        if not value.isascii():
            raise _Unusual  # some names have a structured class and a count limit there
        if len(name) + 2 + len(value) > _MAX_LINE:
            raise _refuse(f"header {name} is longer than {_MAX_LINE} characters")
        lines.append(f"{name}: {value}\r\n".encode("ascii"))

    if text and html:
        text_cte, text_body = _encode_body(str(text))
        html_cte, html_body = _encode_body(str(html))
        boundary = _boundary()
        while (text_cte == b"7bit" and boundary in text_body) or (html_cte == b"7bit" and boundary in html_body):
            boundary = _boundary()
        delimiter = b"--" + boundary
        lines += [
            b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
            delimiter + _CRLF,
            _part_headers(b"plain", text_cte),
            _CRLF,
            text_body,
            _CRLF + delimiter + _CRLF,
            _part_headers(b"html", html_cte),
            _CRLF,
            html_body,
            _CRLF + delimiter + b"--\r\n",
        ]
    else:
        subtype, content = (b"plain", text) if text else (b"html", html)
        cte, body = _encode_body(str(content))
        lines += [_part_headers(subtype, cte), b"MIME-Version: 1.0\r\n\r\n", body]
    lines[0] = _subject_header(subject)
    data = b"".join([line if isinstance(line, bytes) else _stdlib_header(*line) for line in lines])
    return RenderedEmail(data, sender, recipient, message_id[1:-1])


def render_email(
    envelope: Envelope, from_address: str, message_id_domain: str, *, now: datetime | None = None
) -> RenderedEmail:
    """The message of `build_message` as bytes, written directly, with its SMTP envelope.

    Same checks and errors as `build_message`, in the same order; same headers and parts once
    parsed. Anything unusual goes through `build_message(...).as_bytes()`.
    """
    try:
        return _render(envelope, from_address, message_id_domain, now)
    except (_Unusual, UnicodeError):
        message = build_message(envelope, from_address, message_id_domain, now=now)
        recipient = _single_address("To", envelope.address).addr_spec
        message_id = message_id_header(envelope.message_id, message_id_domain)[1:-1]
        return RenderedEmail(message.as_bytes(), _from_header(from_address)[1], recipient, message_id)


def build_message_bytes(
    envelope: Envelope, from_address: str, message_id_domain: str, *, now: datetime | None = None
) -> bytes:
    """`build_message(...).as_bytes()`, written directly: what the outbox and SES send."""
    return render_email(envelope, from_address, message_id_domain, now=now).data
