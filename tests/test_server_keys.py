"""API keys (store and `notifyctl keys …`) and the /metrics exposition."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from notifyctl.cli import startup
from notifyctl.cli.server import register
from notifyctl.errors import InputError
from notifyctl.store.db import connect
from notifyctl.store.keys import KEY_PREFIX, create_key, hash_key, list_keys, revoke_key, verify_key
from tests.test_server_harness import eventually, running, workspace_with_users
from tests.webhook_sink import WebhookSink
from tests.workspace import Workspace, make_workspace, users_csv


def keys_cli(ws: Workspace, *args: str) -> tuple[int, str, str]:
    """`notifyctl keys …` through a Typer app built like the real one (same callback, `register`)."""
    app = startup.new_app()
    register(app)
    result = CliRunner().invoke(app, ["--config", str(ws.config), "keys", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_store_keeps_only_a_hash(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    key = create_key(conn, "billing")
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    assert verify_key(conn, key) == "billing"
    assert verify_key(conn, key + "x") is None
    stored = conn.execute("SELECT key_hash FROM api_keys").fetchone()[0]
    assert stored == hash_key(key) and key not in stored
    conn.close()
    assert key.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("has space", id="space"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("-lead", id="leading-dash"),
    ],
)
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError):
        create_key(connect(tmp_path / "db.sqlite"), name)


def test_revoke_and_duplicate_names(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    key = create_key(conn, "app")
    with pytest.raises(InputError, match="already exists"):
        create_key(conn, "app")
    assert revoke_key(conn, "app") is True
    assert revoke_key(conn, "app") is False
    assert verify_key(conn, key) is None
    [listed] = list_keys(conn)
    assert listed.name == "app" and not listed.active


async def test_cli_keys_create_list_revoke_and_401_after_revoke(tmp_path: Path) -> None:
    ws = workspace_with_users(tmp_path)
    code, out, err = keys_cli(ws, "create", "mobile-backend", "--json")
    assert code == 0, err
    key = orjson.loads(out)["key"]
    code, out, _ = keys_cli(ws, "list", "--json")
    assert [(k["name"], k["active"]) for k in orjson.loads(out)] == [("mobile-backend", True)]
    assert key not in out
    async with running(ws) as srv:
        status, _ = await srv.api("GET", "/v1/users/u1/inbox", key=key)
        assert status == 200
        code, _, err = keys_cli(ws, "revoke", "mobile-backend")
        assert code == 0, err
        status, body = await srv.api("GET", "/v1/users/u1/inbox", key=key)
        assert status == 401, body
    code, _, err = keys_cli(ws, "revoke", "mobile-backend")
    assert code == 2 and "no active key" in err  # not found


SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
    r" (?P<value>-?(?:\d+(?:\.\d+)?(?:e[+-]?\d+)?|NaN|\+Inf|-Inf))$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader of the Prometheus text format: every line a comment or a well-formed sample,
    every sample of a family declared by # TYPE."""
    families: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped")
            families[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match["name"]
        family = re.sub(r"_(sum|count)$", "", name) if name not in families else name
        assert family in families, f"{name} has no # TYPE"
        samples.setdefault(name, []).append((dict(LABEL.findall(match["labels"] or "")), float(match["value"])))
    return samples


async def test_metrics_text_parses_and_counts_deliveries(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    ws = make_workspace(tmp_path)
    assert (
        ws.cli("users", "import", str(ws.write("u.csv", users_csv(2, webhook_url=webhook_sink.url())))).exit_code == 0
    )
    async with running(ws) as srv:
        for user in ("u1", "u2"):
            status, _ = await srv.api(
                "POST",
                "/v1/notify",
                json={
                    "user_id": user,
                    "template": "welcome",
                    "channels": ["webhook", "inapp"],
                    "data": {"product_name": "A"},
                },
            )
            assert status == 202
        await eventually(lambda: ws.states().get("sent") == 4)
        async with srv.http.get(srv.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
    samples = parse_exposition(text)
    delivered = {(labels["channel"], labels["state"]): value for labels, value in samples["notifyctl_deliveries_total"]}
    assert delivered == {("inapp", "sent"): 2, ("webhook", "sent"): 2}
    assert {labels["channel"] for labels, _ in samples["notifyctl_queue_depth"]} == {"email", "inapp", "webhook"}
    quantiles = {(labels["provider"], labels["quantile"]) for labels, _ in samples["notifyctl_provider_latency_ms"]}
    assert ("webhook", "0.99") in quantiles and ("inapp", "0.5") in quantiles
    counts = {labels["provider"]: value for labels, value in samples["notifyctl_provider_latency_ms_count"]}
    assert counts == {"inapp": 2, "webhook": 2}
    assert samples["notifyctl_engine_up"] == [({}, 1.0)]
