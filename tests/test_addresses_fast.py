"""normalize_email's cached fast path gives exactly what email-validator gives, or the same error."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from notifyctl.addresses import AddressError, normalize_email


def reference(value: str) -> str | None:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


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
    pytest.param("a@" + "ü" * 60 + ".example", id="long-unicode-label"),
]


@pytest.mark.parametrize("value", CASES)
def test_fast_path_matches_email_validator(value: str) -> None:
    assert ours(value) == reference(value)
    assert ours(value) == reference(value)  # second call: from the domain cache


def test_error_wording_is_email_validators() -> None:
    with pytest.raises(AddressError, match=r"invalid email address: .*@-sign"):
        normalize_email("user@@example.com")


@settings(max_examples=300, deadline=None)
@given(
    local=st.text(alphabet='ab.+_-"@ é', min_size=0, max_size=12),
    domain=st.sampled_from(["example.com", "EXAMPLE.org", "bücher.de", "x", "a..b", "-a.com", "ex_ample.com"]),
)
def test_fast_path_matches_email_validator_generated(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    assert ours(value) == reference(value)
