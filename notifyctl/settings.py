"""Configuration: notifyctl.toml, NOTIFYCTL_* environment overrides, embedded defaults.

The file is found as notifyctl/discovery.py says (`--config`, NOTIFYCTL_CONFIG, notifyctl.toml in
the working directory or a parent, the user's config directory); without one the embedded
defaults run everything locally (email to an outbox folder, in-app to the SQLite
inbox, webhooks to users' endpoints). `NOTIFYCTL_A__B=value` overrides key `a.b` (the value is
read as a TOML value when it parses as one, else as a string). Provider credentials come from
the providers' own conventions (AWS chain, TWILIO_*, GOOGLE_APPLICATION_CREDENTIALS).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from notifyctl.categories import BUILT_IN_KINDS, UNDEFINED_CATEGORY, CategoryRule, CategorySettings
from notifyctl.config_errors import config_error, did_you_mean
from notifyctl.discovery import DATABASE_FILE, Found, find_config, state_dir_of, user_state_dir
from notifyctl.errors import ConfigError
from notifyctl.models import CHANNELS
from notifyctl.providers.base import PROVIDER_TYPES
from notifyctl.providers.options import PROVIDER_OPTIONS

ENV_PREFIX = "NOTIFYCTL_"
LOCAL_URL = "http://127.0.0.1:8080"  # `notifyctl serve`'s default address
MISSING = {"kind": 'missing: every category needs kind = "marketing", "transactional" or "critical"'}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(BaseModel):
    """One provider account. Keys other than the common ones are the provider's own options."""

    model_config = ConfigDict(extra="allow")

    type: str
    rate: float = Field(default=100.0, gt=0, description="messages per second")
    burst: int = Field(default=0, ge=0, description="bucket size; 0 means equal to rate")
    concurrency: int = Field(default=32, ge=1, le=1000)
    timeout_s: float = Field(default=10.0, gt=0)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def bucket_size(self) -> float:
        return float(self.burst) if self.burst else max(1.0, self.rate)


class ChannelRoute(_Strict):
    """Which provider accounts serve a channel: a weighted pool, and an optional secondary."""

    providers: list[str]
    weights: list[float] | None = None
    secondary: str | None = None
    queue_size: int = Field(default=1000, ge=1)

    @property
    def names(self) -> list[str]:
        """Every provider account of the route: the pool, then the secondary."""
        return [*self.providers, *([self.secondary] if self.secondary else [])]

    @model_validator(mode="after")
    def _weights_match(self) -> ChannelRoute:
        if not self.providers:
            raise ValueError("needs at least one provider")
        if self.weights is not None and len(self.weights) != len(self.providers):
            raise ValueError("weights must have one entry per provider")
        return self


class QuietHours(_Strict):
    start: time = time(21, 0)  # sends not allowed from start ...
    end: time = time(8, 0)  # ... until end, recipient's local time
    channels: list[str] = Field(default_factory=lambda: ["sms"])
    default_timezone: str = "UTC"


class RetrySettings(_Strict):
    base_s: float = Field(default=1.0, gt=0)
    cap_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_after_cap_s: float = Field(default=3600.0, gt=0)
    rate_limit_slowdown_s: float = Field(default=30.0, ge=0)


class BreakerSettings(_Strict):
    consecutive_failures: int = Field(default=5, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    window: int = Field(default=20, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


DEFAULT_HELP_TEXT = "Reply STOP to unsubscribe, START to subscribe again. Msg & data rates may apply."
AWS_SNS_HOSTS = ["sns.*.amazonaws.com", "sns.*.amazonaws.com.cn"]


class ServerSettings(_Strict):
    """`notifyctl serve` (the [server] table)."""

    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    request_timeout_s: float = Field(default=30.0, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    sms_help_text: str = Field(default=DEFAULT_HELP_TEXT, min_length=1, max_length=1600)
    # Host patterns ('*' is one DNS label) for the SNS signing certificate and SubscribeURL.
    sns_cert_hosts: list[str] = Field(default_factory=lambda: list(AWS_SNS_HOSTS))
    sns_subscribe_hosts: list[str] = Field(default_factory=lambda: list(AWS_SNS_HOSTS))
    sns_allow_http: bool = False  # tests serve the certificate from 127.0.0.1 over plain HTTP
    sns_topic_arns: list[str] = Field(default_factory=list)  # empty: any topic
    sns_timeout_s: float = Field(default=5.0, gt=0)
    # Connections the kernel queues before aiohttp accepts them: at 128 a burst of clients waited
    # out SYN retries (seconds). The kernel caps it at net.core.somaxconn.
    backlog: int = Field(default=1024, ge=1)
    # Deliveries accepted and not yet settled (pending or in flight) beyond which POST /v1/notify
    # answers 503 with Retry-After instead of queueing without limit.
    max_pending: int = Field(default=50_000, ge=1)


class KafkaSettings(_Strict):
    """`notifyctl consume` (the [kafka] table). The security options are aiokafka's own, passed as they are."""

    bootstrap_servers: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    topic: str = Field(default="notification.events", min_length=1)
    group: str = Field(default="notifyctl", min_length=1)
    dlq_topic: str | None = Field(default=None, min_length=1)  # unset: TOPIC.dlq
    # Unsettled deliveries of the consumer's run beyond which its partitions are paused.
    max_pending: int = Field(default=10_000, ge=1)
    max_batch: int = Field(default=500, ge=1, le=100_000)  # messages planned (and committed) at a time
    # How long the group waits for a consumer that stopped heartbeating (killed) before its
    # partitions go to another: aiokafka's session_timeout_ms and heartbeat_interval_ms.
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = Field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class Settings(_Strict):
    database: Path = Path("notifyctl.db")
    templates_dir: Path = Path("templates")
    idempotency_window_hours: float = Field(default=48.0, gt=0)
    render_timeout_s: float = Field(default=0.5, gt=0)  # per template render
    # Sender processes per run: a number, or "auto" (one per core for runs of 10,000 deliveries or more).
    processes: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    webhook_disable_after_hours: float = Field(default=72.0, gt=0)  # an endpoint failing this long is disabled
    in_doubt: Literal["hold", "resend"] = "hold"
    # A long-lived run (`serve`) sends deferred deliveries whose time has come this often.
    release_due_every_s: float = Field(default=15.0, gt=0)
    # Where `notifyctl serve` is reachable from the internet: unsubscribe links point there.
    public_url: str | None = None
    # Signs unsubscribe links and keys erasure hashes. Unset: the installation's own random secret,
    # made with the database and kept in it (notifyctl/store/secrets.py).
    unsubscribe_secret: str | None = Field(default=None, min_length=1, repr=False)
    # Links signed with a secret that was replaced keep working this long (erasure hashes forever).
    unsubscribe_grace_days: float = Field(default=30.0, ge=0)
    # Configured secrets that were replaced: a configured secret is never copied into the database,
    # so links signed with one keep working only while it is listed here (its erasure hashes keep
    # matching regardless: the database keeps a key derived from it, one-way).
    unsubscribe_previous_secrets: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, repr=False)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    channels: dict[str, ChannelRoute] = Field(default_factory=dict)
    categories: dict[str, CategorySettings] = Field(default_factory=dict)
    # `POST /api/notify`'s `event` → the template it sends (unlisted events name their template).
    events: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    source: str = Field(default="(embedded defaults)", exclude=True)
    base_dir: Path = Field(default=Path("."), exclude=True)
    # A configuration from the user's config directory: where its database goes unless it sets one.
    home_state_dir: Path | None = Field(default=None, exclude=True)
    found_by: str = Field(default="none", exclude=True)  # how the file was found (discovery.How)
    _rules: dict[str, CategoryRule] = PrivateAttr(default_factory=dict)
    # Where each key given in the file or the environment came from (`config show --origin`).
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("channels", mode="before")
    @classmethod
    def _channel_shorthand(cls, value: Any) -> Any:
        # `[channels] email = "outbox"` is short for `[channels.email] providers = ["outbox"]`
        if isinstance(value, dict):
            return {k: ({"providers": [v]} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        for name, conf in self.providers.items():
            if conf.type not in PROVIDER_TYPES:
                hint = did_you_mean(conf.type, sorted(PROVIDER_TYPES))
                raise ValueError(f"providers.{name}.type: unknown provider type '{conf.type}'{hint}")
        for channel, route in self.channels.items():
            if channel not in CHANNELS:
                raise ValueError(f"channels.{channel}: unknown channel{did_you_mean(channel, CHANNELS)}")
            for name in route.names:
                if name not in self.providers:
                    hint = did_you_mean(name, sorted(self.providers))
                    raise ValueError(f"channels.{channel}: provider '{name}' is not defined under [providers]{hint}")
        self._rules = {name: conf.rule for name, conf in self.categories.items()}
        return self

    @field_validator("public_url")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/?#\s]+", value):
            raise ValueError(f"not an http(s) address: {value!r} (e.g. https://notify.acme.io)")
        return value

    @field_validator("categories")
    @classmethod
    def _built_in_kinds_stay(cls, value: dict[str, CategorySettings]) -> dict[str, CategorySettings]:
        for name, kind in BUILT_IN_KINDS.items():
            if name in value and value[name].kind != kind:
                raise ValueError(
                    f'categories.{name}: the built-in category is of kind "{kind}" '
                    "(define a category of your own for another kind)"
                )
        return value

    def path(self, value: Path | str) -> Path:
        """A path from the configuration, relative to the configuration file's folder."""
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def database_path(self) -> Path:
        """The database: `database` (relative to the file), or in the user's state directory for a
        configuration from the user's config directory that does not set it."""
        if self.home_state_dir is not None and "database" not in self.model_fields_set:
            return self.home_state_dir / DATABASE_FILE
        return self.path(self.database)

    @property
    def state_path(self) -> Path:
        """The state directory, next to the database: crash reports, copies of standard input."""
        return state_dir_of(self.database_path)

    @property
    def origins(self) -> dict[str, str]:
        """Where each key given in the file or the environment came from (dotted key → origin)."""
        return dict(self._origins)

    @property
    def templates_path(self) -> Path:
        return self.path(self.templates_dir)

    @property
    def public_base_url(self) -> str:
        """What links point at: public_url, or while it is unset `serve`'s default local address."""
        return (self.public_url or LOCAL_URL).rstrip("/")

    def category(self, name: str) -> CategoryRule:
        """The rules of a category, derived once at load (a dict lookup per message). An undefined
        one, which the front doors refuse, has every marketing protection."""
        return self._rules.get(name, UNDEFINED_CATEGORY)

    def known_categories(self) -> str:
        """The defined categories with their kinds, for messages: `marketing (marketing), …`."""
        return ", ".join(f"{name} ({conf.kind})" for name, conf in sorted(self.categories.items()))


DEFAULTS: dict[str, Any] = {
    "providers": {
        "outbox": {"type": "outbox", "path": "outbox", "rate": 1000, "concurrency": 8},
        "inapp": {"type": "inapp", "rate": 1000, "concurrency": 8},
        "webhook": {"type": "webhook", "rate": 100, "concurrency": 32},
    },
    "channels": {"email": "outbox", "inapp": "inapp", "webhook": "webhook"},
    "categories": {name: {"kind": kind} for name, kind in BUILT_IN_KINDS.items()},
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


# Variables of the command line's options (--config, --log-file), not configuration keys.
OPTION_VARIABLES = frozenset({ENV_PREFIX + "CONFIG", ENV_PREFIX + "LOG"})


def env_sources(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """The key each NOTIFYCTL_* variable sets → the variable: ("providers", "webhook", "rate") →
    NOTIFYCTL_PROVIDERS__WEBHOOK__RATE (an error in that value names the variable, not the file)."""
    return {
        tuple(name[len(ENV_PREFIX) :].lower().split("__")): name
        for name in environ
        if name.startswith(ENV_PREFIX) and name not in OPTION_VARIABLES
    }


def env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """NOTIFYCTL_A__B=value → {"a": {"b": value}}; NOTIFYCTL_CONFIG and NOTIFYCTL_LOG are options."""
    overrides: dict[str, Any] = {}
    for keys, name in env_sources(environ).items():
        raw = environ[name]
        node = overrides
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _env_value(raw)
    return overrides


def _origins(raw: dict[str, Any], environ: dict[str, str], source: str) -> dict[str, str]:
    """Dotted key → where it was given: `FILE: key` for the file's keys, the variable for overrides."""
    found: dict[str, str] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(dotted + ".", value)
            else:
                found[dotted] = f"{source}: {dotted}"

    walk("", raw)
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in OPTION_VARIABLES:
            found[".".join(name[len(ENV_PREFIX) :].lower().split("__"))] = f"environment {name}"
    return found


def _check_provider_options(settings: Settings, source: str, from_env: dict[tuple[str, ...], str]) -> None:
    """Each provider's own keys against what its type declares (providers/options.py)."""
    common = list(ProviderSettings.model_fields)
    for name, conf in settings.providers.items():
        declared = PROVIDER_OPTIONS.get(conf.type)
        if declared is None:
            continue
        try:
            declared.model_validate(conf.options)
        except ValidationError as exc:
            raise config_error(
                exc, declared, source=source, from_env=from_env, prefix=("providers", name), known_extra=common
            ) from exc


def load_settings(explicit: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the configuration; every problem is a ConfigError naming the key and the file."""
    env = dict(os.environ if environ is None else environ)
    found: Found = find_config(explicit, env)
    path = found.path
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", path=str(path)) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", path=str(path)) from exc
    data = dict(raw)
    # A file that defines its own providers/channels replaces the embedded ones wholesale; its
    # categories are merged with the built-in ones key by key, so that a file adding
    # [categories.newsletter] keeps marketing's protections.
    for key in ("providers", "channels"):
        if key not in data:
            data[key] = DEFAULTS[key]
    if isinstance(data.get("categories", {}), dict):
        data["categories"] = _merge(DEFAULTS["categories"], data.get("categories", {}))
    data = _merge(data, env_overrides(env))
    source = str(path) if path else "(embedded defaults)"
    from_env = env_sources(env)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, Settings, source=source, from_env=from_env, missing=MISSING) from exc
    _check_provider_options(settings, source, from_env)
    settings.source = source
    settings.base_dir = path.parent.resolve() if path else Path.cwd()
    settings.found_by = found.how
    if found.in_user_dir(env):
        settings.home_state_dir = user_state_dir(env)
    settings._origins = _origins(raw, env, source)
    return settings
