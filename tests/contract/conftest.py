"""The guarantee contract suite's fixtures: every test runs once per path (tests/contract/paths.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path as FsPath
from typing import Any

import pytest

from tests.contract.paths import PATHS, Path, make_path
from tests.contract.world import World, make_world
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.fakes.sns import FakeSns
from tests.fakes.twilio import FakeTwilio
from tests.redis_server import RedisServer
from tests.webhook_sink import WebhookSink

Setup = Callable[..., tuple[World, Path]]


@pytest.fixture(params=PATHS)
def path_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def fcm_server() -> Iterator[FakeFcm]:
    # One for the session: generating its service account's RSA key is the slow part.
    with FakeFcm() as fake:
        fake.service_account()
        yield fake


@pytest.fixture(scope="session")
def apns_server() -> Iterator[FakeApns]:
    with FakeApns() as fake:
        yield fake


@pytest.fixture
def contract(path_name: str, tmp_path: FsPath, fcm_server: FakeFcm, apns_server: FakeApns) -> Iterator[Setup]:
    """`contract(n=…, rate=…, burst=…, quiet_webhook=…, push_service=…)` → (world, path) for this test's path."""
    fcm_server.clear()
    apns_server.clear()
    made: list[World] = []
    with WebhookSink() as sink, FakeTwilio() as twilio, FakeSns() as sns:
        redis = RedisServer() if path_name == "redis" else None
        if redis is not None:
            redis.start()
        try:

            def setup(n: int, **options: Any) -> tuple[World, Path]:
                processes = 2 if path_name == "embedded-2" else 1
                world = make_world(
                    tmp_path,
                    n,
                    sink=sink,
                    twilio=twilio,
                    sns=sns,
                    redis=redis,
                    processes=processes,
                    fcm=fcm_server,
                    apns=apns_server,
                    **options,
                )
                made.append(world)
                return world, make_path(path_name, world)

            yield setup
        finally:
            for world in made:
                world.kill_all()
            if redis is not None:
                redis.stop()
