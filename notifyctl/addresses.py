"""Validating and normalising addresses, so that compares (suppressions, dedupe) are exact."""

from __future__ import annotations

import re
from functools import lru_cache

# email_validator and phonenumbers are imported where they are used: together they cost ~100 ms
# of start-up, which a one-off send or `--help` should not pay.


class AddressError(ValueError):
    """An address that cannot be used; the message says why."""


# RFC 5321 §4.5.3.1.1: a local part of at most 64 octets. email-validator counts characters, and
# only in its strict mode; servers refuse longer ones (and cut them, or bounce).
LOCAL_PART_MAX_OCTETS = 64


@lru_cache(maxsize=65536)
def _checked_domain(domain: str) -> tuple[str, str] | None:
    """(normalised, IDNA ASCII) form of a domain as email-validator checks it; None when invalid.

    Checking a domain (IDNA, UTS #46) is most of the ~150 µs email-validator spends on an
    address, and an audience of a million users has a few thousand distinct domains.
    """
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email("x@" + domain, check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.domain, result.ascii_domain


@lru_cache(maxsize=65536)
def _domain_forms(domain: str) -> tuple[str, int] | None:
    """The normalised form of a valid domain, and the most UTF-8 octets any of its three forms
    (as given, normalised, IDNA ASCII) takes; None when invalid."""
    checked = _checked_domain(domain)
    if checked is None:
        return None
    unicode_domain, ascii_domain = checked
    return unicode_domain, max(len(form.encode()) for form in (domain, unicode_domain, ascii_domain))


@lru_cache(maxsize=1)
def _local_part_rules() -> tuple[re.Pattern[str], int]:
    """email-validator's dot-atom pattern and its whole-address length limit (octets)."""
    from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH

    return DOT_ATOM_TEXT, EMAIL_MAX_LENGTH


def _fast_email(address: str) -> str | None:
    """email-validator's normalised form for the common shape (an ASCII dot-atom local part and a
    cached domain), or None to let the full validator decide (and word the error)."""
    dot_atom, max_length = _local_part_rules()
    local, at, domain = address.partition("@")
    if not at or "@" in domain:
        return None
    # A non-empty ASCII letters-and-digits local part is a dot-atom; others ask the pattern. A
    # dot-atom is ASCII: a character is an octet.
    if len(local) > LOCAL_PART_MAX_OCTETS or (not (local.isalnum() and local.isascii()) and not dot_atom.match(local)):
        return None
    forms = _domain_forms(domain)
    if forms is None:
        return None
    unicode_domain, domain_octets = forms
    # The whole-address length limit email-validator applies to each form (UTF-8 octets); a
    # dot-atom local part is ASCII, one octet a character.
    if len(local) + 1 + domain_octets > max_length:
        return None
    # A dot-atom local part is its own normal form; the whole address is lower-cased below anyway.
    return f"{local}@{unicode_domain}"


def normalize_email(value: str) -> str:
    """Validated (no DNS, by email-validator) and lower-cased; raises AddressError."""
    text = value.strip()
    fast = _fast_email(text)
    if fast is not None:
        return fast.lower()
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(f"invalid email address: {exc}") from exc
    octets = len(result.local_part.encode())
    if octets > LOCAL_PART_MAX_OCTETS:
        raise AddressError(
            f"invalid email address: the part before the @-sign is {octets} octets long, "
            f"more than the {LOCAL_PART_MAX_OCTETS} allowed (RFC 5321)"
        )
    return result.normalized.lower()


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """E.164 (+15551234567); raises AddressError."""
    import phonenumbers

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


# -- push addresses: the push service a token belongs to -------------------------------------------
# A push delivery's address names its service: an APNs device token is written `apns:<token>`, an
# FCM registration token (or `/topics/<name>`) as it is. The directory keeps the token and its
# service in separate columns (devices.token, devices.service) and hands out push addresses; the
# router sends each address through a provider of its service.

PUSH_SERVICES = ("fcm", "apns")
DEFAULT_PUSH_SERVICE = "fcm"
_APNS_PREFIX = "apns:"
_FCM_PREFIX = "fcm:"


def push_address(token: str, service: str | None) -> str:
    """The push address of a token of `service` (fcm when None)."""
    return _APNS_PREFIX + token if service == "apns" else token


def split_push_address(address: str) -> tuple[str, str]:
    """(service, token) of a push address; `fcm:<token>` is accepted as the plain token."""
    if address.startswith(_APNS_PREFIX):
        return "apns", address[len(_APNS_PREFIX) :]
    if address.startswith(_FCM_PREFIX):
        return "fcm", address[len(_FCM_PREFIX) :]
    return DEFAULT_PUSH_SERVICE, address


def push_service(address: str) -> str:
    """The push service of a push address: `apns` or `fcm`."""
    return "apns" if address.startswith(_APNS_PREFIX) else DEFAULT_PUSH_SERVICE
