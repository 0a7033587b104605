"""Push through APNs and FCM side by side, from the CLI: each token has its push service (users import,
the devices API), and a user's push goes to each token through a provider of its own service.
APNs churn is skipped and removed, a wrong APNs environment stops the provider and removes nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from notifyctl.providers.apns import ApnsProvider
from notifyctl.providers.base import ProviderContext
from notifyctl.settings import load_settings
from notifyctl.store.db import connect, iso
from notifyctl.store.schema import MIGRATIONS
from tests.fakes.apns import ApnsAnswer, FakeApns
from tests.fakes.fcm import FakeFcm
from tests.provider_fixtures import ORDER_DATA
from tests.test_server_harness import running
from tests.workspace import Workspace, campaign_toml, make_workspace, toml_value

pytest_plugins = ("tests.provider_fixtures",)


def apns_token(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture(scope="module")
def apns_server() -> Iterator[FakeApns]:
    with FakeApns() as fake:
        yield fake


@pytest.fixture
def apns(apns_server: FakeApns) -> FakeApns:
    apns_server.clear()
    return apns_server


def workspace(
    tmp_path: Path,
    apns: FakeApns,
    fcm: FakeFcm | None = None,
    fcm_key_file: Path | None = None,
    *,
    users: str,
    route: list[str] | str = "apns",
) -> Workspace:
    providers: dict[str, dict[str, Any]] = {
        "apns": {
            **apns.provider_settings(apns.write_key(tmp_path / "AuthKey.p8"), apns.write_ca(tmp_path / "apns-ca.pem")),
            "timeout_s": 2,
        }
    }
    if fcm is not None and fcm_key_file is not None:
        providers["fcm"] = {"type": "fcm", **fcm.provider_settings(fcm_key_file), "timeout_s": 2}
    names = [route] if isinstance(route, str) else route
    ws = make_workspace(tmp_path, providers=providers, extra=f"[channels.push]\nproviders = {toml_value(names)}\n")
    ws.write("users.csv", users)
    imported = ws.cli("users", "import", "users.csv")
    assert imported.exit_code == 0, imported.stderr
    user_ids = [line.split(",")[0] for line in users.splitlines()[1:]]
    ws.write("aud.csv", "user_id,first_name\n" + "".join(f"{user_id},Ada\n" for user_id in user_ids))
    ws.write("c.toml", campaign_toml("c1", "order_shipped", ["push"], "aud.csv", ORDER_DATA))
    return ws


def devices(ws: Workspace) -> set[tuple[str, str, str]]:
    with ws.db() as conn:
        return {tuple(row) for row in conn.execute("SELECT user_id, token, service FROM devices")}  # type: ignore[misc]


def rows(ws: Workspace) -> dict[str, tuple[Any, ...]]:
    with ws.db() as conn:
        return {
            row[0]: tuple(row)[1:]
            for row in conn.execute("SELECT address, state, reason, error_class, attempts FROM deliveries")
        }


def test_each_token_goes_through_a_provider_of_its_own_push_service(
    tmp_path: Path, apns: FakeApns, fcm_api: FakeFcm, fcm_key_file: Path
) -> None:
    users = (
        "user_id,push_tokens,push_service\n"
        f"u1,{apns_token(1)},apns\n"  # an iPhone app on APNs
        "u2,fcm-tok-2,\n"  # FCM, the default
        f"u3,fcm-tok-3|apns:{apns_token(3)},fcm\n"  # both: a token may say its own service
    )
    ws = workspace(tmp_path, apns, fcm_api, fcm_key_file, users=users, route=["fcm", "apns"])
    assert devices(ws) == {
        ("u1", apns_token(1), "apns"),
        ("u2", "fcm-tok-2", "fcm"),
        ("u3", "fcm-tok-3", "fcm"),
        ("u3", apns_token(3), "apns"),
    }

    result = ws.cli("broadcast", "c.toml", "--json")

    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["counts"] == {"push": {"sent": 4}}
    assert sorted(request.token for request in apns.requests) == sorted([apns_token(1), apns_token(3)])
    assert sorted(message["message"]["token"] for message in fcm_api.sent) == ["fcm-tok-2", "fcm-tok-3"]
    payload = apns.sent[0].json()
    assert payload["aps"]["alert"] == {"title": "Your order has shipped", "body": payload["aps"]["alert"]["body"]}
    assert "order A-1042 is on its way with DHL" in payload["aps"]["alert"]["body"]
    assert payload["order_id"] == "A-1042"
    with ws.db() as conn:
        by_address = dict(conn.execute("SELECT address, provider_message_id FROM deliveries"))
    assert set(by_address) == {f"apns:{apns_token(1)}", f"apns:{apns_token(3)}", "fcm-tok-2", "fcm-tok-3"}
    apns_ids = {request.headers["apns-id"] for request in apns.sent}
    assert {by_address[f"apns:{apns_token(i)}"] for i in (1, 3)} == apns_ids


def test_an_unregistered_apns_token_is_skipped_and_removed_and_the_run_succeeds(tmp_path: Path, apns: FakeApns) -> None:
    users = "user_id,push_tokens,push_service\n" + "".join(f"u{i},{apns_token(i)},apns\n" for i in range(1, 7))
    ws = workspace(tmp_path, apns, users=users)
    apns.unregister(apns_token(2))
    apns.unregister(apns_token(5))

    result = ws.cli("broadcast", "c.toml", "--json")

    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["counts"] == {"push": {"sent": 4, "skipped": 2}}
    assert {address: row[:2] for address, row in rows(ws).items() if row[0] != "sent"} == {
        f"apns:{apns_token(2)}": ("skipped", "token_unregistered"),
        f"apns:{apns_token(5)}": ("skipped", "token_unregistered"),
    }
    assert {token for _, token, _ in devices(ws)} == {apns_token(i) for i in (1, 3, 4, 6)}


def test_a_wrong_apns_environment_stops_the_provider_and_keeps_every_token(tmp_path: Path, apns: FakeApns) -> None:
    n = 30
    users = "user_id,push_tokens,push_service\n" + "".join(f"u{i},{apns_token(i)},apns\n" for i in range(1, n + 1))
    ws = workspace(tmp_path, apns, users=users)
    apns.wrong_environment = True  # production tokens sent to the sandbox host: BadDeviceToken for every one

    result = ws.cli("broadcast", "c.toml")

    said = " ".join(result.stderr.split())
    assert result.exit_code == 1
    assert "error: provider 'apns' stopped:" in said and "sandbox vs production" in said
    assert "No token was removed" in said
    assert {row[:3] for row in rows(ws).values()} == {("dead", None, "ProviderMisconfigured")}
    assert len(devices(ws)) == n
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM audit_events WHERE kind='device_removed'").fetchone()[0] == 0

    apns.clear()  # the right host: the same tokens are accepted
    run_id = orjson.loads(ws.cli("runs", "list", "--json").stdout)[0]["run_id"]
    redriven = ws.cli("dlq", "redrive", "--run", run_id, "--json")
    assert redriven.exit_code == 0, redriven.stderr
    assert sorted(request.token for request in apns.sent) == sorted(apns_token(i) for i in range(1, n + 1))


def test_an_expired_provider_token_costs_one_recorded_retry_with_a_new_token(tmp_path: Path, apns: FakeApns) -> None:
    users = "user_id,push_tokens,push_service\n" + "".join(f"u{i},{apns_token(i)},apns\n" for i in range(1, 4))
    ws = workspace(tmp_path, apns, users=users)
    apns.expire_next_token()  # the first token the provider signs answers 403 ExpiredProviderToken

    result = ws.cli("broadcast", "c.toml", "--json")

    assert result.exit_code == 0, result.stderr
    assert {row[:2] + row[3:] for row in rows(ws).values()} == {("sent", None, 2)}
    expired = [request for request in apns.requests if request.reason == "ExpiredProviderToken"]
    assert len(expired) == 3 and len(apns.sent) == 3
    assert {r.headers["authorization"] for r in expired}.isdisjoint(r.headers["authorization"] for r in apns.sent)
    with ws.db() as conn:
        codes = [row[0] for row in conn.execute("SELECT code FROM attempts ORDER BY id")]
    assert codes.count("ExpiredProviderToken") == 3


def test_an_apns_token_without_an_apns_provider_is_a_dead_letter_that_says_so(
    tmp_path: Path, apns: FakeApns, fcm_api: FakeFcm, fcm_key_file: Path
) -> None:
    users = f"user_id,push_tokens,push_service\nu1,{apns_token(1)},apns\nu2,fcm-tok-2,fcm\n"
    ws = workspace(tmp_path, apns, fcm_api, fcm_key_file, users=users, route="fcm")

    result = ws.cli("broadcast", "c.toml", "--json")

    assert result.exit_code == 1
    found = rows(ws)
    assert found["fcm-tok-2"][0] == "sent"
    assert found[f"apns:{apns_token(1)}"][:3] == ("dead", None, "ConfigError")
    with ws.db() as conn:
        (message,) = conn.execute("SELECT error_message FROM deliveries WHERE state='dead'").fetchone()
    assert "no provider of [channels.push] sends to apns tokens" in message
    assert apns.requests == [] and [m["message"]["token"] for m in fcm_api.sent] == ["fcm-tok-2"]


def test_a_push_service_that_does_not_exist_is_refused_with_its_line(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    ws.write("users.csv", "user_id,push_tokens,push_service\nu1,tok,apns\nu2,tok2,huawei\n")

    result = ws.cli("users", "import", "users.csv")

    assert result.exit_code == 2
    assert "line 3" in result.stderr and "push_service must be one of fcm, apns" in result.stderr


def test_the_devices_api_registers_a_token_with_its_push_service(tmp_path: Path, apns: FakeApns) -> None:
    ws = workspace(tmp_path, apns, users="user_id,email\nu1,u1@example.com\n")

    async def register() -> None:
        async with running(ws) as srv:
            status, body = await srv.api(
                "POST", "/v1/users/u1/devices", json={"token": apns_token(1), "platform": "ios", "service": "apns"}
            )
            assert (status, body["service"]) == (201, "apns")
            status, body = await srv.api("POST", "/v1/users/u1/devices", json={"token": "fcm-tok", "platform": "ios"})
            assert (status, body["service"]) == (201, "fcm")
            status, _ = await srv.api("POST", "/v1/users/u1/devices", json={"token": "x", "service": "huawei"})
            assert status == 422

    asyncio.run(register())
    assert devices(ws) == {("u1", apns_token(1), "apns"), ("u1", "fcm-tok", "fcm")}

    result = ws.cli("broadcast", "c.toml", "--json")

    assert result.exit_code == 1  # the FCM token has no provider here: that one is dead
    assert [request.token for request in apns.sent] == [apns_token(1)]


def test_doctor_checks_the_apns_key_without_sending(tmp_path: Path, apns: FakeApns) -> None:
    ws = workspace(tmp_path, apns, users="user_id,email\nu1,u1@example.com\n")

    good = ws.cli("doctor", "--json")
    (tmp_path / "AuthKey.p8").write_text("not a key")
    bad = ws.cli("doctor", "--json")

    checks = {c["area"]: c for c in orjson.loads(good.stdout)["checks"]}
    assert checks["provider apns"]["status"] == "ok", checks["provider apns"]
    broken = {c["area"]: c for c in orjson.loads(bad.stdout)["checks"]}["provider apns"]
    assert broken["status"] == "fail" and "cannot use the APNs key" in broken["message"]
    assert bad.exit_code == 1 and apns.requests == []


def test_tokens_stored_before_the_push_service_existed_are_fcm_tokens(tmp_path: Path) -> None:
    path = tmp_path / "notifyctl.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
    names = [name for name, _ in MIGRATIONS]
    for name, sql in MIGRATIONS[: names.index("0009_device_service")]:
        for statement in sql.split(";") if isinstance(sql, str) else sql:
            if statement.strip():
                old.execute(statement)
        old.execute("INSERT INTO migrations VALUES (?, ?)", (name, iso()))
    old.execute("INSERT INTO devices VALUES ('u1', 't1', 'ios', ?, ?)", (iso(), iso()))
    old.close()

    conn = connect(path)  # migrates

    assert [tuple(row) for row in conn.execute("SELECT token, platform, service FROM devices")] == [
        ("t1", "ios", "fcm")
    ]
    conn.close()


def test_the_readme_apns_configuration_is_one_notifyctl_reads(tmp_path: Path, apns: FakeApns) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = next(b for b in readme.split("```toml\n")[1:] if "[providers.apns]" in b).split("```")[0]
    block = block.replace('"AuthKey_ABC123DEFG.p8"', '"AuthKey.p8"')
    apns.write_key(tmp_path / "AuthKey.p8")
    config = tmp_path / "notifyctl.toml"
    config.write_text('[providers.fcm]\ntype = "fcm"\ncredentials = "sa.json"\n' + block)

    settings = load_settings(config, environ={})

    conf = settings.providers["apns"]
    assert conf.type == "apns" and settings.channels["push"].providers == ["fcm", "apns"]
    provider = ApnsProvider(
        ProviderContext(name="apns", settings=conf.options, db_path=tmp_path / "db", base_dir=tmp_path)
    )
    assert provider.host == "https://api.push.apple.com" and provider.topic == "com.example.app"


def test_a_send_whose_answer_never_comes_is_held_in_doubt_not_sent_again(tmp_path: Path, apns: FakeApns) -> None:
    ws = workspace(tmp_path, apns, users=f"user_id,push_tokens,push_service,first_name\nu1,{apns_token(1)},apns,Ada\n")
    apns.script(ApnsAnswer(stall_s=4))  # APNs took the request and says nothing within timeout_s (2 s)

    result = ws.cli(
        "send", "-t", "order_shipped", "-u", "u1", "--channel", "push",
        "--data", orjson.dumps(ORDER_DATA).decode(), "--event-id", "order-A-1", "--json",
    )  # fmt: skip

    assert result.exit_code == 1, result.stderr  # held for the operator: APNs has no idempotency key
    assert orjson.loads(result.stdout)["counts"] == {"push": {"in_doubt": 1}}
    assert rows(ws)[f"apns:{apns_token(1)}"][:2] == ("in_doubt", "outcome_unknown")
    with ws.db() as conn:
        assert [tuple(r) for r in conn.execute("SELECT outcome, code FROM attempts")] == [
            ("in_doubt", "timeout_after_send")
        ]
    assert len(apns.requests) == 1
