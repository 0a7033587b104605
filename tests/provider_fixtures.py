"""Every provider's local fake as a plain pytest fixture, for any test module to use.

Use them either by listing this module as a plugin (what the cross-provider tests do, so that
fixture parameters do not shadow imports):

    pytest_plugins = ("tests.provider_fixtures",)

or by importing the fixtures a module needs (`from tests.provider_fixtures import twilio_api`).

    moto_server / moto_ses   moto's SES server (module scope) / emptied, SENDER_ADDRESS verified
    ses_api                  FakeSesApi: scripted SESv2 errors (moto never throttles)
    smtp_server              FakeSmtp (aiosmtpd)
    postmark_api             FakePostmark
    twilio_api / twilio_api_b  two FakeTwilio accounts (different SIDs, tokens and senders)
    fcm_server / fcm_api     FakeFcm with a trusted service account (module scope) / cleared per test
    fcm_key_file             that service account's key file in tmp_path
    open_provider            factory: build + open any provider type; closed at teardown
    (webhook_sink comes from tests/conftest.py)

For pipeline tests: `add_users(ws, users)` writes users (phones, devices, endpoints) straight
into a workspace's directory, `order_campaign(...)` writes a campaign of templates/order_shipped,
and `open_context(ws)` opens an app Context on the workspace for in-process broadcasts.

The `*_settings` functions give the provider options that point notifyctl at each fake, for
`ProviderContext.settings` in unit tests and for `make_workspace(providers=...)` in pipeline tests.

A module that lists this one in `pytest_plugins` and also imports helpers from it has imported
it before pytest registers it as a plugin; it holds no assertions, so it opts out of assertion
rewriting (and of the "already imported" warning, an error under filterwarnings=error):
PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from notifyctl.app.context import Context
from notifyctl.models import Envelope, User
from notifyctl.providers.base import Provider, ProviderContext, build_provider
from notifyctl.settings import load_settings
from notifyctl.store import directory
from notifyctl.store.db import connect
from tests.fakes.fcm import FakeFcm
from tests.fakes.moto import FakeSesApi, MotoSes, set_fake_aws_env
from tests.fakes.postmark import FakePostmark
from tests.fakes.smtp import FakeSmtp
from tests.fakes.twilio import FakeTwilio
from tests.webhook_sink import SINK_SECRET
from tests.workspace import Workspace, campaign_toml

SENDER = "Notifications <sender@example.com>"
SENDER_ADDRESS = "sender@example.com"
SECOND_ACCOUNT_SID = "AC" + "fedcba9876543210" * 2
SECOND_AUTH_TOKEN = "0123456789abcdef" * 2
SECOND_FROM_NUMBER = "+15005550007"

OpenProvider = Callable[[str, str, dict[str, Any]], Awaitable[Provider]]


def provider_context(tmp_path: Path, name: str, settings: dict[str, Any]) -> ProviderContext:
    """A ProviderContext rooted in `tmp_path` (database notifyctl.db there)."""
    return ProviderContext(name=name, settings=settings, db_path=tmp_path / "notifyctl.db", base_dir=tmp_path)


def ses_settings(url: str, **overrides: Any) -> dict[str, Any]:
    """`ses` provider options for moto or FakeSesApi at `url`."""
    return {"endpoint_url": url, "region": MotoSes.region, "from_address": SENDER, "timeout_s": 5, **overrides}


def smtp_settings(server: FakeSmtp, **overrides: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "from_address": SENDER,
        "start_tls": False,
        "local_hostname": "client.example.com",
        "timeout_s": 5,
        **overrides,
    }


def postmark_settings(api: FakePostmark, **overrides: Any) -> dict[str, Any]:
    return {"base_url": api.url, "server_token": api.token, "from_address": SENDER, "timeout_s": 5, **overrides}


def webhook_settings(**overrides: Any) -> dict[str, Any]:
    """`webhook` provider options allowed to reach the local sink over plain HTTP."""
    return {"allow_hosts": ["127.0.0.1", "localhost"], "timeout_s": 2, **overrides}


def sink_envelope(address: str, delivery_id: int) -> Envelope:
    """A webhook delivery to `address`, signed with the sink's secret."""
    return Envelope(
        delivery_id=delivery_id,
        run_id="run",
        channel="webhook",
        user_id=f"u{delivery_id}",
        address=address,
        template="t",
        template_version="v",
        category="transactional",
        idempotency_key=f"k{delivery_id}",
        message_id=f"msg_{delivery_id}",
        parts={"body": {"n": delivery_id}},
        signing_secrets=[SINK_SECRET],
    )


# -- SES ------------------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials and region in the environment (subprocesses inherit them)."""
    set_fake_aws_env(monkeypatch)


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoSes]:
    # Module scope: moto takes a second to start; MotoSes counts requests through a process-wide
    # logger, so two must never run at once (each module gets its own, one after the other).
    with MotoSes() as server:
        yield server


@pytest.fixture
def moto_ses(moto_server: MotoSes, aws_env: None) -> MotoSes:
    """moto, emptied, with SENDER_ADDRESS verified and fake AWS credentials in the environment."""
    moto_server.reset()
    moto_server.verify_identity(SENDER_ADDRESS)
    return moto_server


@pytest.fixture
def ses_api(aws_env: None) -> Iterator[FakeSesApi]:
    with FakeSesApi() as api:
        yield api


# -- SMTP and Postmark ------------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[FakeSmtp]:
    with FakeSmtp() as server:
        yield server


@pytest.fixture
def postmark_api() -> Iterator[FakePostmark]:
    with FakePostmark() as api:
        yield api


# -- Twilio -----------------------------------------------------------------------------------------


@pytest.fixture
def twilio_api() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def twilio_api_b() -> Iterator[FakeTwilio]:
    """A second Twilio account (another SID, token and sender), for pools and failover."""
    with FakeTwilio(SECOND_ACCOUNT_SID, SECOND_AUTH_TOKEN, SECOND_FROM_NUMBER) as fake:
        yield fake


# -- FCM --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fcm_server() -> Iterator[FakeFcm]:
    # Module scope: generating the RSA key of the service account is the slow part.
    with FakeFcm() as fake:
        fake.service_account()
        yield fake


@pytest.fixture
def fcm_api(fcm_server: FakeFcm) -> FakeFcm:
    fcm_server.clear()
    return fcm_server


@pytest.fixture
def fcm_key_file(fcm_api: FakeFcm, tmp_path: Path) -> Path:
    return fcm_api.write_service_account(tmp_path / "service-account.json")


# -- any provider -----------------------------------------------------------------------------------


@pytest.fixture
async def open_provider(tmp_path: Path) -> AsyncIterator[OpenProvider]:
    """`await open_provider(type_name, name, settings)`: built through the registry and opened."""
    opened: list[Provider] = []

    async def factory(type_name: str, name: str, settings: dict[str, Any]) -> Provider:
        provider = build_provider(type_name, provider_context(tmp_path, name, settings))
        await provider.open()
        opened.append(provider)
        return provider

    yield factory
    for provider in reversed(opened):
        await provider.close()


# -- pipeline helpers -------------------------------------------------------------------------------

ORDER_DATA = {"order_id": "A-1042", "carrier": "DHL", "tracking_url": "https://track.example.com/A-1042"}


def add_users(ws: Workspace, users: Iterable[User]) -> None:
    """Write users (with their devices and webhook endpoints) into the workspace's directory."""
    conn = connect(ws.db_path)
    try:
        directory.upsert_users(conn, users)
    finally:
        conn.close()


def order_campaign(ws: Workspace, campaign_id: str, channels: Sequence[str], user_ids: Sequence[str]) -> Path:
    """A transactional campaign of templates/order_shipped to `user_ids`; returns the campaign file."""
    audience = f"{campaign_id}-audience.csv"
    ws.write(audience, "user_id,first_name\n" + "".join(f"{user_id},Ada\n" for user_id in user_ids))
    return ws.write(f"{campaign_id}.toml", campaign_toml(campaign_id, "order_shipped", channels, audience, ORDER_DATA))


def open_context(ws: Workspace) -> Context:
    """An app Context on the workspace's notifyctl.toml (close `ctx.conn` when done)."""
    return Context.open(load_settings(ws.config, environ={}))
