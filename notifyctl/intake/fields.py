"""Field checks: a record's fields become a `User` or a `Recipient`, or a `RowError` that names the
field and says what is wrong with it.

Contact fields (user_id, email, phone, locale, timezone, push_tokens, webhook_url) are checked and
normalised alike for users and audience rows; the other columns become a user's attributes or a
recipient's template data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import available_timezones

from pydantic import ValidationError

from notifyctl.addresses import (
    PUSH_SERVICES,
    AddressError,
    normalize_email,
    normalize_phone,
    push_address,
    split_push_address,
)
from notifyctl.errors import InputError, RowError
from notifyctl.intake.records import Parsed, Record
from notifyctl.models import Recipient, User

T = TypeVar("T")

Build = Callable[[Mapping[str, Any], int], T]
"""Makes a row's value from its fields and start line; raises FieldError or ValidationError."""

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTACT_FIELDS = ("email", "phone", "push_tokens", "webhook_url")
RECIPIENT_FIELDS = frozenset(
    {"user_id", "email", "phone", "locale", "timezone", "push_tokens", "push_service", "webhook_url"}
)
USER_FIELDS = RECIPIENT_FIELDS | {"webhook_secret"}

_LOCALE = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?")
_TOKEN_SPLIT = re.compile(r"[|;]")


class FieldError(Exception):
    """One field of a row is not acceptable."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field_name = field_name
        self.reason = reason
        super().__init__(reason)


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"{name} must be a string")
    return value.strip() or None


def _identifier(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text({name: value}, name)
    if text is not None and CONTROL.search(text):
        raise FieldError(name, f"{name} must not contain control characters")
    return text


@lru_cache(maxsize=1)
def known_zones() -> frozenset[str]:
    """The IANA time zone names."""
    return frozenset(available_timezones())


@lru_cache(maxsize=4096)
def normal_locale(value: str) -> str:
    """'pt_br' as 'pt-BR'. Cached: a million rows carry a handful of distinct locales (errors are
    not cached)."""
    match = _LOCALE.fullmatch(value)
    if match is None:
        raise FieldError("locale", "locale must look like 'en', 'fr-CA' or 'pt_BR'")
    language, script, region = match.groups()
    parts = [language.lower(), script.title() if script else None, region.upper() if region else None]
    return "-".join(part for part in parts if part)


def push_tokens(value: Any, *, from_csv: bool, service: Any = None) -> list[str]:
    """The distinct push addresses of a JSON list, or of a CSV cell separated by '|' or ';': a token
    of `service` (the row's push_service, `fcm` when empty) is `apns:<token>` for APNs and the bare
    token for FCM (addresses.push_address); a token written `apns:<token>` or `fcm:<token>` says its
    own service."""
    if service is not None and service != "" and service not in PUSH_SERVICES:
        raise FieldError("push_service", f"push_service must be one of {', '.join(PUSH_SERVICES)}")
    if value is None or value == "":
        return []
    if from_csv and isinstance(value, str):
        tokens = _TOKEN_SPLIT.split(value)
    elif isinstance(value, list) and all(isinstance(token, str) for token in value):
        tokens = value
    else:
        raise FieldError("push_tokens", "push_tokens must be a list of strings")
    cleaned = [token.strip() for token in tokens if token.strip()]
    if any(CONTROL.search(token) or " " in token for token in cleaned):
        raise FieldError("push_tokens", "a push token must not contain spaces or control characters")
    addresses = []
    for token in cleaned:
        own_service, bare = split_push_address(token)
        if not bare:
            raise FieldError("push_tokens", "a push token must not be empty")
        addresses.append(push_address(bare, own_service if bare != token else service))
    return list(dict.fromkeys(addresses))


@lru_cache(maxsize=4096)
def webhook_url(value: str) -> str:
    """An http(s) URL with a host. Cached: many users often share one endpoint URL (errors are not
    cached)."""
    if CONTROL.search(value) or " " in value:
        raise FieldError("webhook_url", "webhook_url must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise FieldError("webhook_url", f"webhook_url is not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise FieldError("webhook_url", "webhook_url must be an http(s) URL with a host")
    return value


def plain_http_rule(allow_hosts: Collection[str]) -> Callable[[str], None]:
    """The webhook provider's rule for a valid webhook_url, at import: https://, or plain http:// to
    a host its `allow_hosts` lists (the same decision, `security.ssrf.is_allowed_host` on the URL's
    host as yarl reads it, that providers/webhook.py makes at send, where such a URL would be dead).
    The check raises FieldError; it is kept per URL (many users share one endpoint)."""
    allowed = tuple(allow_hosts)
    decided: dict[str, bool] = {}

    def check(url: str) -> None:
        if url[:5].lower() != "http:":
            return
        ok = decided.get(url)
        if ok is None:
            from yarl import URL

            from notifyctl.security.ssrf import is_allowed_host

            ok = is_allowed_host(URL(url).raw_host or "", allowed)
            if len(decided) < 65536:
                decided[url] = ok
        if not ok:
            raise FieldError(
                "webhook_url",
                "webhook_url must be https:// (plain http:// only to a host in the webhook provider's allow_hosts)",
            )

    return check


def good_secret(secret: str) -> bool:
    """A Standard Webhooks secret: 'whsec_' and something after it."""
    return secret.startswith("whsec_") and len(secret) > len("whsec_")


def _contact(fields: Mapping[str, Any], *, from_csv: bool, default_region: str | None) -> dict[str, Any]:
    """The validated, normalised contact fields of a row; raises FieldError."""
    contact: dict[str, Any] = {"user_id": _identifier(fields, "user_id")}
    if (email := _text(fields, "email")) is not None:
        try:
            contact["email"] = normalize_email(email)
        except AddressError as exc:
            raise FieldError("email", str(exc)) from exc
    if (phone := _text(fields, "phone")) is not None:
        try:
            contact["phone"] = normalize_phone(phone, default_region)
        except AddressError as exc:
            raise FieldError("phone", str(exc)) from exc
    if (locale := _text(fields, "locale")) is not None:
        contact["locale"] = normal_locale(locale)
    if (timezone := _text(fields, "timezone")) is not None:
        if timezone not in known_zones():
            raise FieldError("timezone", "timezone is not a known IANA time zone (like Europe/Paris)")
        contact["timezone"] = timezone
    contact["push_tokens"] = push_tokens(
        fields.get("push_tokens"), from_csv=from_csv, service=_text(fields, "push_service")
    )
    if (url := _text(fields, "webhook_url")) is not None:
        contact["webhook_url"] = webhook_url(url)
    return contact


def _extra(fields: Mapping[str, Any], known: frozenset[str], nested: str, *, from_csv: bool) -> dict[str, Any]:
    """Columns that are not contact fields; in JSONL an object under `nested` is merged in first."""
    extra: dict[str, Any] = {}
    if not from_csv and nested in fields:
        if not isinstance(fields[nested], dict):
            raise FieldError(nested, f"{nested} must be a JSON object")
        extra.update(fields[nested])
    extra.update((key, value) for key, value in fields.items() if key not in known and (from_csv or key != nested))
    return extra


def user_builder(from_csv: bool, default_region: str | None, plain_http_hosts: Collection[str] = ()) -> Build[User]:
    """A user from a row: user_id required; unknown columns become attributes. A plain http://
    webhook_url only to the hosts of `plain_http_hosts` (`plain_http_rule`)."""
    check_url = plain_http_rule(plain_http_hosts)

    def build(fields: Mapping[str, Any], line: int) -> User:
        contact = _contact(fields, from_csv=from_csv, default_region=default_region)
        if contact["user_id"] is None:
            raise FieldError("user_id", "missing user_id")
        if contact.get("webhook_url") is not None:
            check_url(contact["webhook_url"])
        secret = _text(fields, "webhook_secret")
        if secret is not None and not good_secret(secret):
            raise FieldError("webhook_secret", "webhook_secret must start with 'whsec_' (Standard Webhooks)")
        attributes = _extra(fields, USER_FIELDS, "attributes", from_csv=from_csv)
        return User(**contact, webhook_secret=secret, attributes=attributes)

    return build


def recipient_builder(from_csv: bool, default_region: str | None) -> Build[Recipient]:
    """A recipient from an audience row: a user_id or a contact field; other columns are data."""

    def build(fields: Mapping[str, Any], line: int) -> Recipient:
        if _text(fields, "webhook_secret") is not None:
            # Recipient has no place for it, and a secret must never reach template data.
            raise FieldError("webhook_secret", "webhook_secret is not accepted in audience files; import users")
        contact = _contact(fields, from_csv=from_csv, default_region=default_region)
        if not contact["user_id"] and not any(contact.get(name) for name in CONTACT_FIELDS):
            raise FieldError("user_id", "no user_id and no contact field (email, phone, push_tokens, webhook_url)")
        data = _extra(fields, USER_FIELDS, "data", from_csv=from_csv)
        return Recipient(line=line, **contact, data=data)

    return build


def require_columns(
    path: Path, *, all_of: tuple[str, ...] = (), any_of: tuple[str, ...] = ()
) -> Callable[[list[str]], None]:
    """A header check: every column of `all_of` and at least one of `any_of`, else InputError."""

    def check(names: list[str]) -> None:
        missing = [name for name in all_of if name not in names]
        if missing:
            raise InputError(f"{path}: missing required column(s): {', '.join(missing)}")
        if any_of and not any(name in names for name in any_of):
            raise InputError(f"{path}: needs at least one of the columns {', '.join(any_of)}")

    return check


# --- records to values ----------------------------------------------------------------------


def _row_error(exc: FieldError | ValidationError, line: int) -> RowError:
    if isinstance(exc, FieldError):
        return RowError(line, exc.reason, exc.field_name)
    first = exc.errors()[0]
    where = str(first["loc"][0]) if first["loc"] else None
    return RowError(line, f"{where or 'row'}: {first['msg']}", where)


def outcome(record: Record, build: Build[T]) -> T | RowError:
    """A record's value, or why it is rejected."""
    if record.fields is None:
        return record.error or RowError(record.line, "bad row")
    try:
        return build(record.fields, record.line)
    except (FieldError, ValidationError) as exc:
        return _row_error(exc, record.line)


def parse(record: Record, build: Build[T]) -> Parsed[T]:
    """A record's value or error, with where it starts and ends."""
    if record.fields is None:
        return Parsed(None, record.error, record.line, record.end_offset, record.end_line)
    try:
        value = build(record.fields, record.line)
    except (FieldError, ValidationError) as exc:
        return Parsed(None, _row_error(exc, record.line), record.line, record.end_offset, record.end_line)
    return Parsed(value, None, record.line, record.end_offset, record.end_line)


def convert(records: Iterable[Record], build: Build[T], skip_lines: Container[int] = ()) -> Iterator[Parsed[T]]:
    """`parse` for each record whose start line is not in `skip_lines`."""
    for record in records:
        if record.line not in skip_lines:
            yield parse(record, build)
