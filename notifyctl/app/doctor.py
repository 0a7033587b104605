"""`notifyctl doctor`: is this installation able to send? Checked without sending anything.

Configuration, database (integrity, WAL, private file mode), templates (every one loads), and
each provider: credentials present, then a cheap authenticated read that proves the account is
reachable and the credentials are accepted (SES GetAccount, SMTP EHLO(+AUTH)+QUIT, Twilio and
Postmark account GETs, an FCM access-token fetch). Provider-specific probes live here, not in the
providers: providers only move messages. Every message is scrubbed of configured secrets.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from notifyctl.app.checkup import Check, fail, ok, warn
from notifyctl.app.checkup import failed as failed  # the doctor's verdict, for its callers
from notifyctl.app.doctor_state import check_database_dir, check_outbox_folder, check_runs
from notifyctl.app.links import public_url_problem, real_email_providers
from notifyctl.errors import ConfigError, TemplateError
from notifyctl.security.redaction import configured_secrets, redact_secrets
from notifyctl.settings import ProviderSettings, Settings, load_settings
from notifyctl.store.db import utcnow

# Secrets published in notifyctl's own code and examples: whoever knows them forges unsubscribe links.
PUBLIC_SECRETS = frozenset({"change-me-unsubscribe-secret", "change-me"})
PROBE_TIMEOUT_S = 10.0
LOCAL_PROBES = frozenset({"outbox", "webhook", "inapp"})  # nothing over the network


# --- configuration, database, templates --------------------------------------------------------


def check_config(settings: Settings) -> list[Check]:
    checks = [ok("config", f"configuration read from {settings.source}")]
    checks.extend(check_links(settings))
    checks.extend(check_categories(settings))
    for channel, route in settings.channels.items():
        if not route.providers:
            checks.append(fail("config", f"channel {channel} has no provider"))
    return checks


def check_links(settings: Settings) -> list[Check]:
    """Unsubscribe links: signed with a secret nobody else knows, pointing at a real address."""
    checks: list[Check] = []
    secret = settings.unsubscribe_secret
    if secret is None:
        checks.append(ok("config", "unsubscribe links are signed with this installation's own random secret"))
    elif secret in PUBLIC_SECRETS:
        checks.append(
            fail(
                "config",
                "unsubscribe_secret is a value published in notifyctl's examples: anyone could forge "
                "unsubscribe links; remove it (the installation then makes its own) or set a long random value",
            )
        )
    elif len(secret) < 16:
        checks.append(warn("config", "unsubscribe_secret is shorter than 16 characters"))
    problem = public_url_problem(settings)
    providers = real_email_providers(settings)
    if problem is not None and providers:
        checks.append(
            fail(
                "config",
                f"{problem}: unsubscribe links in email through {', '.join(providers)} would lead nowhere; "
                "set public_url to the https:// address where `notifyctl serve` is reachable",
            )
        )
    elif problem is not None:
        checks.append(warn("config", f"{problem}: fine for the local outbox, not for real email"))
    elif settings.public_url is not None and not settings.public_url.startswith("https://"):
        checks.append(warn("config", f"public_url {settings.public_url} is not https://"))
    return checks


def check_categories(settings: Settings) -> list[Check]:
    """Every marketing-kind category with a protection turned off, and the old spellings to rewrite."""
    checks: list[Check] = []
    for name, conf in sorted(settings.categories.items()):
        rule = conf.rule
        if not rule.protections_off:
            continue
        message = f"category {name} ({rule.kind}) has protections off: {', '.join(rule.protections_off)}"
        if rule.old_spellings:
            listed = ", ".join(f'"{p}"' for p in rule.protections_off)
            message += (
                f" (said with {', '.join(rule.old_spellings)} of an earlier release: "
                f"write protections_off = [{listed}] instead)"
            )
        checks.append(warn("config", message))
    return checks


def check_database(path: Path) -> list[Check]:
    from notifyctl.store import health
    from notifyctl.store.db import applied_migrations
    from notifyctl.store.schema import MIGRATIONS

    area = "database"
    if not path.exists():
        return [warn(area, f"{path} does not exist yet; it is created (mode 0600) on first use")]
    checks: list[Check] = []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        checks.append(
            fail(area, f"{path} is readable or writable by other users (mode {mode:04o}); run: chmod 600 {path}")
        )
    try:
        conn = health.open_read_only(path)
    except sqlite3.Error as exc:
        return [*checks, fail(area, f"cannot open {path}: {exc}")]
    try:
        integrity = health.integrity_check(conn)
        if integrity != ["ok"]:
            checks.append(fail(area, f"integrity check failed: {'; '.join(map(str, integrity[:5]))}"))
        journal = health.journal_mode(conn)
        if str(journal).lower() != "wal":
            checks.append(fail(area, f"journal mode is {journal}, not WAL (open it once with notifyctl to fix)"))
        done = applied_migrations(conn)
        missing = [name for name, _ in MIGRATIONS if name not in done]
        if missing:
            checks.append(warn(area, f"{len(missing)} migration(s) not applied yet (applied on next use)"))
    except sqlite3.DatabaseError as exc:
        checks.append(fail(area, f"{path} is not a usable SQLite database: {exc}"))
    finally:
        conn.close()
    if not any(check.status == "fail" for check in checks):
        checks.append(ok(area, f"{path}: integrity ok, WAL, private"))
    return checks


def check_devices(path: Path) -> list[Check]:
    """How many push tokens no app has registered again for `devices.STALE_AFTER` (prune them)."""
    from notifyctl.app.devices import STALE_AFTER
    from notifyctl.store import directory, health
    from notifyctl.store.db import iso, utcnow

    if not path.exists():
        return []
    days = STALE_AFTER.days
    try:
        conn = health.open_read_only(path)
        try:
            stale = directory.stale_devices(conn, iso(utcnow() - STALE_AFTER))
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # reported by check_database
        return [warn("devices", f"cannot count push tokens: {exc}")]
    if stale:
        return [
            warn(
                "devices",
                f"{stale} push token(s) not registered again for {days} days: "
                f"notifyctl devices prune --older-than {days}d",
            )
        ]
    return [ok("devices", f"no push token older than {days} days")]


def check_templates(settings: Settings) -> list[Check]:
    from notifyctl.templates.store import TemplateStore

    store = TemplateStore(settings.templates_path, categories=settings.categories)
    names = store.names()
    if not names:
        return [warn("templates", f"no templates in {settings.templates_path}")]
    checks: list[Check] = []
    for name in names:
        try:
            store.get(name)
        except TemplateError as exc:
            checks.append(fail("templates", str(exc)))
    if not checks:
        checks.append(ok("templates", f"{len(names)} template(s) load"))
    return checks


# --- providers ---------------------------------------------------------------------------------

Probe = Callable[[str, ProviderSettings, Settings], Awaitable[list[Check]]]


def _option(conf: ProviderSettings, key: str, env: str | None = None) -> str | None:
    value = conf.options.get(key)
    if value:
        return str(value)
    return os.environ.get(env) or None if env else None


async def _http_status(url: str, headers: dict[str, str], timeout_s: float) -> int:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
        session.get(url, headers=headers, allow_redirects=False) as response,
    ):
        return response.status


def _http_verdict(area: str, what: str, status: int) -> Check:
    if 200 <= status < 300:
        return ok(area, f"{what}: reachable, credentials accepted")
    if status in (401, 403):
        return fail(area, f"{what}: the credentials were rejected (HTTP {status})")
    return fail(area, f"{what}: unexpected answer HTTP {status}")


async def probe_twilio(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    area = f"provider {name}"
    sid = _option(conf, "account_sid", "TWILIO_ACCOUNT_SID")
    token = _option(conf, "auth_token", "TWILIO_AUTH_TOKEN")
    missing = [k for k, v in (("account_sid", sid), ("auth_token", token)) if not v]
    if missing:
        return [fail(area, f"no Twilio {' and '.join(missing)} (set them in [providers.{name}] or TWILIO_*)")]
    if not (_option(conf, "from_number") or _option(conf, "messaging_service_sid")):
        return [fail(area, "needs from_number or messaging_service_sid")]
    base = (_option(conf, "base_url") or "https://api.twilio.com").rstrip("/")
    basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
    status = await _http_status(
        f"{base}/2010-04-01/Accounts/{sid}.json", {"Authorization": f"Basic {basic}"}, conf.timeout_s
    )
    return [_http_verdict(area, "Twilio account", status)]


async def probe_postmark(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    area = f"provider {name}"
    token = _option(conf, "server_token", "POSTMARK_SERVER_TOKEN")
    if not token:
        return [
            fail(area, f"no Postmark server token (set server_token in [providers.{name}] or POSTMARK_SERVER_TOKEN)")
        ]
    base = (_option(conf, "base_url") or "https://api.postmarkapp.com").rstrip("/")
    headers = {"Accept": "application/json", "X-Postmark-Server-Token": token}
    return [_http_verdict(area, "Postmark server", await _http_status(f"{base}/server", headers, conf.timeout_s))]


async def probe_smtp(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    import aiosmtplib

    area = f"provider {name}"
    host = _option(conf, "host") or "localhost"
    port = int(conf.options["port"]) if conf.options.get("port") else None
    start_tls = conf.options.get("start_tls")
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        use_tls=bool(conf.options.get("use_tls", False)),
        start_tls=None if start_tls is None else bool(start_tls),
        validate_certs=bool(conf.options.get("validate_certs", True)),
        timeout=conf.timeout_s,
    )
    username, password = _option(conf, "username"), _option(conf, "password")
    try:
        await client.connect()
        await client.ehlo()
        if username and password:
            await client.login(username, password)
        await client.quit()
    except aiosmtplib.SMTPAuthenticationError as exc:
        return [fail(area, f"SMTP server {host} rejected the username/password ({exc.code})")]
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return [fail(area, f"cannot talk to SMTP server {host}: {exc}")]
    finally:
        client.close()
    return [ok(area, f"SMTP server {host}: EHLO answered" + (", login accepted" if username else ""))]


async def probe_ses(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    import boto3  # type: ignore[import-untyped]
    import botocore.config
    import botocore.exceptions

    area = f"provider {name}"

    def call() -> list[Check]:
        session = boto3.Session()
        if session.get_credentials() is None:
            return [fail(area, "no AWS credentials found (environment, ~/.aws, instance role)")]
        region = _option(conf, "region") or session.region_name or "us-east-1"
        config = botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=conf.timeout_s,
            read_timeout=conf.timeout_s,
        )
        client = session.client("sesv2", region_name=region, endpoint_url=_option(conf, "endpoint_url"), config=config)
        try:
            account = client.get_account()
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            return [fail(area, f"SES refused GetAccount ({code}): check the AWS credentials and region {region}")]
        except botocore.exceptions.BotoCoreError as exc:
            return [fail(area, f"cannot reach SES in {region}: {exc}")]
        checks = [ok(area, f"SES in {region}: reachable, credentials accepted")]
        if not account.get("SendingEnabled", True):
            checks.append(fail(area, "SES sending is disabled for this account"))
        if not account.get("ProductionAccessEnabled", True):
            checks.append(warn(area, "SES account is in the sandbox: only verified addresses receive mail"))
        return checks

    if not _option(conf, "from_address"):
        return [fail(area, f"no from_address in [providers.{name}]")]
    return await asyncio.to_thread(call)


async def probe_fcm(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    area = f"provider {name}"
    raw = _option(conf, "credentials", "GOOGLE_APPLICATION_CREDENTIALS")
    if not raw:
        return [fail(area, "no service-account key file (credentials, or GOOGLE_APPLICATION_CREDENTIALS)")]
    path = settings.path(Path(raw).expanduser())

    def call() -> list[Check]:
        from firebase_admin import credentials

        try:
            certificate = credentials.Certificate(str(path))
        except (OSError, ValueError) as exc:
            return [fail(area, f"cannot use the service-account key {path}: {exc}")]
        try:
            certificate.get_access_token()
        except Exception as exc:  # google-auth raises several unrelated types for one failed token fetch
            return [fail(area, f"could not get an access token with {path}: {type(exc).__name__}: {exc}")]
        return [ok(area, "FCM: access token obtained")]

    return await asyncio.to_thread(call)


async def probe_apns(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    """The .p8 key signs an ES256 provider token, the CA file is there; nothing is sent to Apple."""
    from notifyctl.providers.accounts import open_account

    provider = await open_account(settings, name)  # a ConfigError is reported by _probe
    await provider.close()
    return [ok(f"provider {name}", "APNs: the key signs a provider token (nothing sent)")]


async def probe_outbox(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    area = f"provider {name}"
    folder = settings.path(str(conf.options.get("path", "outbox")))
    problems = check_outbox_folder(area, folder)
    if problems:
        return problems
    if folder.exists():
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o077:
            return [
                fail(area, f"outbox folder {folder} is open to other users (mode {mode:04o}); run: chmod 700 {folder}")
            ]
    return [ok(area, f"writes .eml files to {folder}")]


async def probe_webhook(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    area = f"provider {name}"
    ca_file = _option(conf, "ca_file")
    if ca_file and not settings.path(ca_file).is_file():
        return [fail(area, f"ca_file {ca_file} does not exist")]
    return [ok(area, "endpoints belong to customers: nothing to probe")]


async def probe_nothing(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    return [ok(f"provider {name}", "nothing to check")]


PROBES: dict[str, Probe] = {
    "twilio": probe_twilio,
    "postmark": probe_postmark,
    "smtp": probe_smtp,
    "ses": probe_ses,
    "fcm": probe_fcm,
    "apns": probe_apns,
    "outbox": probe_outbox,
    "webhook": probe_webhook,
    "inapp": probe_nothing,
}


async def _probe(name: str, conf: ProviderSettings, settings: Settings) -> list[Check]:
    probe = PROBES.get(conf.type, probe_nothing)
    try:
        return await asyncio.wait_for(probe(name, conf, settings), timeout=conf.timeout_s + PROBE_TIMEOUT_S)
    except TimeoutError:
        return [fail(f"provider {name}", f"no answer within {conf.timeout_s + PROBE_TIMEOUT_S:g} s")]
    except Exception as exc:  # a probe must report, never crash the doctor
        return [fail(f"provider {name}", f"check failed: {type(exc).__name__}: {exc}")]


async def diagnose(
    config: Path | None = None, *, environ: dict[str, str] | None = None, probe_providers: bool = True
) -> list[Check]:
    """Every check, in order; nothing is sent. A configuration that does not load stops there."""
    try:
        settings = load_settings(config, environ)
    except ConfigError as exc:
        return [fail("config", str(exc))]
    checks = check_config(settings)
    checks.extend(check_database_dir(settings.database_path))
    checks.extend(check_database(settings.database_path))
    checks.extend(check_runs(settings.database_path, utcnow()))
    checks.extend(check_devices(settings.database_path))
    checks.extend(check_templates(settings))
    used = {name for route in settings.channels.values() for name in [*route.providers, route.secondary or ""]}
    unused = sorted(set(settings.providers) - used)
    if unused:
        checks.append(warn("config", f"provider(s) defined but used by no channel: {', '.join(unused)}"))
    # --offline leaves out what goes over the network; the local folders are checked regardless.
    names = sorted(n for n, conf in settings.providers.items() if probe_providers or conf.type in LOCAL_PROBES)
    if names:
        results = await asyncio.gather(*(_probe(n, settings.providers[n], settings) for n in names))
        for result in results:
            checks.extend(result)
    secrets = configured_secrets(settings)
    return [Check(c.area, c.status, redact_secrets(c.message, secrets)) for c in checks]
