"""normalize_email's cached fast path gives exactly what email-validator gives, or the same error;
and a local part over 64 octets (RFC 5321), which email-validator accepts, is refused."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from notifyctl.addresses import AddressError, normalize_email


def reference(value: str) -> str | None:
    """email-validator's answer, with RFC 5321's limit of 64 octets before the @-sign."""
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return None if len(result.local_part.encode()) > 64 else result.normalized.lower()


def ours(value: str) -> str | None:
    try:
        return normalize_email(value)
    except AddressError:
        return None


CASES = [
    pytest.param("ada@example.com", id="plain"),
    pytest.param("  Ada.Lovelace+news@Example.COM ", id="case-and-spaces"),
    pytest.param("postmaster@example.com", id="case-insensitive-mailbox"),
    pytest.param("user@bücher.example", id="unicode-domain"),
    pytest.param("user@xn--bcher-kva.example", id="idna-domain"),
    pytest.param("user@example", id="no-tld"),
    pytest.param("user@localhost", id="special-use-domain"),
    pytest.param("user@example.com.", id="trailing-dot"),
    pytest.param("user@@example.com", id="two-ats"),
    pytest.param("user@", id="no-domain"),
    pytest.param("@example.com", id="no-local"),
    pytest.param(".user@example.com", id="leading-dot"),
    pytest.param("us..er@example.com", id="double-dot"),
    pytest.param('"quoted local"@example.com', id="quoted"),
    pytest.param("Ada <ada@example.com>", id="display-name"),
    pytest.param("josé@example.com", id="unicode-local"),
    pytest.param("a@[127.0.0.1]", id="domain-literal"),
    pytest.param("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com", id="at-length-limit"),
    pytest.param("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".com", id="over-length-limit"),
    pytest.param("a" * 200 + "@example.com", id="long-local"),
    pytest.param("a" * 64 + "@example.com", id="local-of-64-octets"),
    pytest.param("a" * 65 + "@example.com", id="local-of-65-octets"),
    pytest.param("a." * 32 + "b@example.com", id="dotted-local-of-65-octets"),
    pytest.param("é" * 32 + "@example.com", id="unicode-local-of-64-octets"),
    pytest.param("é" * 33 + "@example.com", id="unicode-local-of-66-octets"),
    pytest.param("a@" + "ü" * 60 + ".example", id="long-unicode-label"),
]


@pytest.mark.parametrize("value", CASES)
def test_fast_path_matches_email_validator(value: str) -> None:
    assert ours(value) == reference(value)
    assert ours(value) == reference(value)  # second call: from the domain cache


def test_error_wording_is_email_validators() -> None:
    with pytest.raises(AddressError, match=r"invalid email address: .*@-sign"):
        normalize_email("user@@example.com")


@pytest.mark.parametrize("local", ["a" * 65, "é" * 33], ids=["ascii", "unicode"])
def test_a_local_part_over_64_octets_is_refused_though_email_validator_accepts_it(local: str) -> None:
    address = f"{local}@example.com"
    assert validate_email(address, check_deliverability=False).local_part == local  # accepted there
    with pytest.raises(AddressError, match=r"before the @-sign is \d+ octets long, more than the 64 allowed"):
        normalize_email(address)


@settings(max_examples=300, deadline=None)
@given(
    local=st.text(alphabet='ab.+_-"@ é', min_size=0, max_size=12) | st.text(alphabet="ab.é", min_size=60, max_size=68),
    domain=st.sampled_from(["example.com", "EXAMPLE.org", "bücher.de", "x", "a..b", "-a.com", "ex_ample.com"]),
)
def test_fast_path_matches_email_validator_generated(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    assert ours(value) == reference(value)
