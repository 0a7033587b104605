"""Each provider type's own options, declared as data: a [providers.NAME] table may hold the common
keys (type, rate, burst, concurrency, timeout_s: settings.ProviderSettings) and these, nothing else.

Declared here rather than on the provider classes so that reading the configuration imports no
SDK (aioboto3, twilio, google-auth); tests/test_config_errors.py checks that every option a
provider reads is declared. Values keep the provider's own reading of them (a provider gets the
table as written); the models only refuse unknown keys and values of the wrong type.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutboxOptions(_Options):
    path: str = "outbox"  # the folder of .eml files, relative to the configuration file
    from_address: str | None = None
    message_id_domain: str | None = None


class InAppOptions(_Options):
    busy_timeout_ms: int = Field(default=5000, ge=0)


class WebhookOptions(_Options):
    allow_hosts: list[str] = Field(default_factory=list)  # hosts allowed past the SSRF guard (tests, private)
    connections: int | None = Field(default=None, ge=1)
    ca_file: str | None = None


class SesOptions(_Options):
    region: str | None = None
    endpoint_url: str | None = None
    from_address: str | None = None
    message_id_domain: str | None = None
    configuration_set: str | None = None
    tags: dict[str, str | int | float | bool] = Field(default_factory=dict)


class SmtpOptions(_Options):
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool | None = None
    validate_certs: bool = True
    local_hostname: str | None = None
    pool_size: int | None = Field(default=None, ge=1)
    from_address: str | None = None
    message_id_domain: str | None = None


class PostmarkOptions(_Options):
    base_url: str | None = None
    server_token: str | None = None
    from_address: str | None = None
    message_stream: str | None = None
    connections: int | None = Field(default=None, ge=1)


class TwilioOptions(_Options):
    account_sid: str | None = None
    auth_token: str | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback: str | None = None
    base_url: str | None = None


class FcmOptions(_Options):
    credentials: str | None = None
    project_id: str | None = None
    base_url: str | None = None
    device_id_field: str | None = None
    connections: int | None = Field(default=None, ge=1)
    app_name: Any = None  # an earlier release's setting, read and ignored


class ApnsOptions(_Options):
    key_file: str | None = None  # the .p8 signing key, relative to the configuration file
    key_id: str | None = None
    team_id: str | None = None
    topic: str | None = None  # the app's bundle id
    host: str | None = None  # an https:// URL; default Apple's production host (or sandbox)
    sandbox: bool = False
    ca_file: str | None = None
    token_refresh_s: float | None = None
    ttl_s: float | None = None
    priority: int | None = None


PROVIDER_OPTIONS: dict[str, type[BaseModel]] = {
    "outbox": OutboxOptions,
    "inapp": InAppOptions,
    "webhook": WebhookOptions,
    "ses": SesOptions,
    "smtp": SmtpOptions,
    "postmark": PostmarkOptions,
    "twilio": TwilioOptions,
    "fcm": FcmOptions,
    "apns": ApnsOptions,
}
