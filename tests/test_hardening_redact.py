"""Masking addresses, scrubbing secrets, allowlisted JSON logs, crash reports."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from notifyctl.logs import LOGGER_NAME, address_field, configure_logging, crash_report, write_crash_report
from notifyctl.security.redaction import configured_secrets, mask_address, mask_email, mask_phone, redact_secrets
from notifyctl.settings import load_settings

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nqhkiG9w0BAQ==\n-----END PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param("secret is whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw!", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                     id="standard-webhooks-secret"),
        pytest.param("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_x", "eyJhbGciOiJIUzI1NiJ9",
                     id="bearer-token"),
        pytest.param("authorization: basic QUMxMjM6c2VjcmV0dG9rZW4=", "QUMxMjM6c2VjcmV0dG9rZW4=", id="basic-auth"),
        pytest.param("key AKIAIOSFODNN7EXAMPLE in use", "AKIAIOSFODNN7EXAMPLE", id="aws-access-key"),
        pytest.param("https://ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:0123456789abcdef0123456789abcdef@api.twilio.com",
                     "0123456789abcdef0123456789abcdef", id="twilio-token-after-sid"),
        pytest.param('{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": '
                     '"fedcba9876543210fedcba9876543210"}', "fedcba9876543210fedcba9876543210",
                     id="twilio-token-in-json"),
        pytest.param(f"key file:\n{PEM}\nend", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", id="pem-private-key"),
        pytest.param("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA truncated", "MIIEowIBAAKCAQEA",
                     id="truncated-pem"),
        pytest.param("postmark said no to s3cr3t-server-token-value", "s3cr3t-server-token-value",
                     id="configured-secret"),
    ],
)  # fmt: skip
def test_redact_secrets_removes_each_shape(text: str, secret: str) -> None:
    redacted = redact_secrets(text, ["s3cr3t-server-token-value"])
    assert secret not in redacted
    assert "***" in redacted


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("delivery 12 sent to a***@example.com in 80 ms", id="ordinary-log-line"),
        pytest.param("AC0123456789abcdef0123456789abcdef alone", id="account-sid-is-not-secret"),
        pytest.param("run_20261121_ab12cd state completed", id="run-id"),
    ],
)
def test_redact_secrets_leaves_ordinary_text(text: str) -> None:
    assert redact_secrets(text, ["abc", ""]) == text  # too-short configured values are ignored


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        pytest.param("ada@example.com", "a***@example.com", id="email"),
        pytest.param("+14155552671", "+1******2671", id="phone"),
        pytest.param("https://hooks.example.com/a@b", "https://hooks.example.com/…", id="url-with-at-sign"),
        pytest.param("fcm-token-abcdefghijklmnop", "fcm-toke…", id="push-token"),
        pytest.param(None, "", id="none"),
    ],
)
def test_mask_address(address: str | None, masked: str) -> None:
    assert mask_address(address) == masked


def test_mask_email_and_phone() -> None:
    assert mask_email("x@y.org") == "x***@y.org"
    assert mask_phone("+1234") == "***"


def test_configured_secrets_finds_provider_keys_and_env(tmp_path: Path) -> None:
    config = tmp_path / "notifyctl.toml"
    config.write_text(
        'unsubscribe_secret = "unsub-canary-0001"\n'
        '[providers.pm]\ntype = "postmark"\nserver_token = "pm-canary-0002"\nfrom_address = "a@b.co"\n'
        '[providers.tw]\ntype = "twilio"\naccount_sid = "AC1"\nauth_token = "tw-canary-0003"\n'
        '[providers.ses]\ntype = "ses"\nfrom_address = "a@b.co"\nregion = "eu-west-1"\n'
        '[channels]\nemail = "pm"\nsms = "tw"\n',
        encoding="utf-8",
    )
    settings = load_settings(config, {})
    env = {"TWILIO_AUTH_TOKEN": "env-canary-0004", "HOME": "/root", "NOTIFYCTL_PROVIDERS__X__API_KEY": "env-canary-5"}
    found = configured_secrets(settings, env)
    assert {"unsub-canary-0001", "pm-canary-0002", "tw-canary-0003", "env-canary-0004", "env-canary-5"} <= set(found)
    assert "/root" not in found and "eu-west-1" not in found and "a@b.co" not in found


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs" / "notifyctl.log"
    configure_logging("info", path, ["canary-password-123"])
    yield path
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_notifyctl_handler", False):
            logger.removeHandler(handler)
            handler.close()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_json_logs_carry_only_allowlisted_fields_and_no_secrets(log_file: Path) -> None:
    log = logging.getLogger(LOGGER_NAME + ".pipeline")
    log.info(
        "sent with canary-password-123 and Bearer abc.def.ghi",
        extra={"event": "sent", "delivery_id": 12, "latency_ms": 80.5, "envelope": {"address": "ada@example.com"},
               "reason": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", **address_field("ada@example.com")},
    )  # fmt: skip
    try:
        raise RuntimeError("boom with canary-password-123")
    except RuntimeError:
        log.exception("crashed", extra={"event": "crash"})
    log.debug("not at info level")
    lines = [orjson.loads(line) for line in log_file.read_text().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert set(first) == {"ts", "level", "event", "delivery_id", "latency_ms", "reason", "address_masked", "message"}
    assert first["address_masked"] == "a***@example.com"
    assert first["reason"] == "***"
    text = log_file.read_text()
    for leak in ("canary-password-123", "abc.def.ghi", "ada@example.com", "whsec_"):
        assert leak not in text
    assert "boom with ***" in lines[1]["exception"]
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600


def test_configure_logging_twice_keeps_one_handler(log_file: Path) -> None:
    configure_logging("warning", log_file, [])
    ours = [h for h in logging.getLogger(LOGGER_NAME).handlers if isinstance(h, logging.FileHandler)]
    assert len(ours) == 1
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", None, [])


def test_crash_report_is_scrubbed_and_private(tmp_path: Path) -> None:
    try:
        raise ConnectionError("POST https://api.example.com Authorization: Basic dXNlcjpjYW5hcnk= token tok-canary-9")
    except ConnectionError as exc:
        text = crash_report(exc, ["tok-canary-9"])
        path = write_crash_report(exc, tmp_path / "crashes", ["tok-canary-9"])
    assert "Traceback" in text and "ConnectionError" in text
    assert "dXNlcjpjYW5hcnk=" not in text and "tok-canary-9" not in text
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
