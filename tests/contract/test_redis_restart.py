"""Redis restarted without persistence mid-run (SHUTDOWN NOSAVE): the workers and the coordinator
keep running and reconnect, `cluster status` says the run is stalled while Redis is away, and the
run ends with nothing lost and nothing sent twice outside in-doubt rows. The Redis path only."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.contract.checks import every_delivery_once
from tests.contract.conftest import Setup
from tests.contract.paths import Api, Redis
from tests.contract.world import wait_until

pytestmark = pytest.mark.slow
N = 300


@pytest.mark.parametrize("path_name", ["redis"])
def test_a_redis_restart_mid_run_loses_nothing(contract: Setup) -> None:
    world, path = contract(N, rate=100.0)
    assert isinstance(path, Redis) and world.redis is not None
    path.start()
    wait_until(lambda: len(world.sink.requests) >= 60, 60, "the first messages")
    port = world.redis.port
    world.redis.shutdown_nosave()

    down = world.cli("cluster", "status", "--redis", path.url, "--json")
    assert down.code == 1, down.err
    shown = orjson.loads(down.out)
    assert shown["reachable"] is False
    assert [run["run_id"] for run in shown["runs"]] == [path.run_id]
    assert "redis unreachable" in shown["runs"][0]["stalled"]
    time.sleep(1.0)  # everyone is retrying meanwhile
    world.redis.start(port=port)

    finished = path.finish()
    assert finished.code == 0, finished.err[-3000:]
    assert all(worker.poll() is None for worker in path.workers), "a worker did not survive the restart"
    rows = every_delivery_once(world, N)
    assert {row["state"] for row in rows.values()} == {"sent"}  # webhooks dedupe: in-doubt ones re-sent
    # What was at the workers went with Redis's data: in doubt (and re-sent here), not pending again.
    assert any(row["in_doubt"] for row in rows.values())
    assert "redis unreachable" in finished.err and "redis reachable again" in finished.err
    workers_log = (world.root / "workers.log").read_text()
    assert "redis unreachable" in workers_log and "redis reachable again" in workers_log

    up = world.cli("cluster", "status", "--redis", path.url, "--json")
    assert up.code == 0, up.err
    assert len(orjson.loads(up.out)["workers"]) == Redis.WORKERS


@pytest.mark.parametrize("path_name", ["redis"])
def test_serve_on_redis_keeps_accepting_and_delivering_across_a_restart(contract: Setup) -> None:
    world, path = contract(40)
    assert isinstance(path, Redis) and world.redis is not None
    api = Api(world)  # the notifications as a client posts them, idempotency keys and all
    path.start_workers()
    api.server, api.url = world.serve("--redis", path.url)
    api.campaign = "c.toml"
    first = [f"u{i}" for i in range(1, 21)]
    api.post_all(first)
    wait_until(lambda: len(world.sink.requests) >= 20, 60, "the first twenty delivered")

    port = world.redis.port
    world.redis.shutdown_nosave()
    time.sleep(1.0)
    world.redis.start(port=port)
    api.post_all()  # the other twenty, once Redis is back
    wait_until(lambda: world.states().get("sent") == 40, 60, "all forty delivered and recorded")
    assert api.server.poll() is None, "serve died with Redis"
    stopped = world.stop(api.server)
    assert stopped.code == 0
    log = "".join(world.server_log)
    assert "redis unreachable" in log and "redis reachable again" in log
    every_delivery_once(world, 40)
