"""Validating and normalising addresses, so that compares (suppressions, dedupe) are exact."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email


class AddressError(ValueError):
    """An address that cannot be used; the message says why."""


def normalize_email(value: str) -> str:
    """Validated (no DNS) and lower-cased; raises AddressError."""
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(f"invalid email address: {exc}") from exc
    return result.normalized.lower()


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """E.164 (+15551234567); raises AddressError."""
    text = value.strip()
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise AddressError(f"invalid phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise AddressError("invalid phone number: not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_address(channel: str, value: str) -> str:
    """The canonical form of an address on a channel (for suppressions and dedupe)."""
    if channel == "email":
        return normalize_email(value)
    if channel == "sms":
        return normalize_phone(value)
    return value.strip()
