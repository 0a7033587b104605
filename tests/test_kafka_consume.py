"""`notifyctl consume` against a real Kafka-protocol broker (Tansu): every event sent once, invalid
events dead-lettered with their reason, offsets committed after the outbox, replay for a new channel."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.kafka_broker import FAST_GROUP_ENV, TansuBroker, run
from tests.webhook_sink import WebhookSink, stall
from tests.workspace import Workspace, make_workspace, users_csv

TOPIC = "notification.events"


def event(i: int, **extra: Any) -> dict[str, Any]:
    """The i-th event, spelled as the seed's services do every other time (userId, payload)."""
    data = {"product_name": f"P{i}"}
    if i % 2:
        return {"userId": f"u{i % 5 + 1}", "template": "welcome", "event_id": f"ev-{i}", "payload": data, **extra}
    return {"user_id": f"u{i % 5 + 1}", "template": "welcome", "event_id": f"ev-{i}", "data": data, **extra}


def workspace(tmp_path: Path, sink: WebhookSink, channels: dict[str, str] | None = None, extra: str = "") -> Workspace:
    ws = make_workspace(tmp_path, channels=channels or {"webhook": "webhook"}, extra=extra)
    users = ws.write("users.csv", users_csv(5, webhook_url=sink.url()))
    assert ws.cli("users", "import", str(users)).exit_code == 0
    return ws


def start_consume(
    ws: Workspace, broker: TansuBroker, *args: str, log: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`notifyctl consume` as a real process, once it is consuming; and its run id (its stderr's
    first lines in `log`)."""
    env = {**os.environ, **FAST_GROUP_ENV, "NOTIFYCTL_CONFIG": str(ws.config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifyctl.cli", "consume", "--kafka", broker.bootstrap, "--topic", TOPIC, *args],
        cwd=ws.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[str] = [] if log is None else log
    for raw in proc.stderr:
        line = raw.decode()
        seen.append(line)
        match = re.search(r"consuming .* run (\S+)\)", line)
        if match:
            return proc, match[1]
    proc.wait()
    raise AssertionError("consume did not start: " + "".join(seen))


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any], str]:
    """SIGTERM, then the exit code, the JSON summary on stdout and stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, orjson.loads(out) if out.strip() else {}, err.decode()


def wait_until(check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def channel_states(ws: Workspace, run_id: str) -> dict[tuple[str, str, str], int]:
    with ws.db() as conn:
        rows = conn.execute(
            "SELECT channel, state, coalesce(reason, '') AS reason, count(*) FROM deliveries WHERE run_id=? "
            "GROUP BY channel, state, reason",
            (run_id,),
        )
        return {(r[0], r[1], r[2]): r[3] for r in rows}


def test_events_sent_once_and_invalid_ones_dead_lettered(
    tmp_path: Path, kafka_broker: TansuBroker, webhook_sink: WebhookSink
) -> None:
    ws = workspace(tmp_path, webhook_sink)
    run(kafka_broker.create_topic(TOPIC))
    bad = [
        b"{not json",
        orjson.dumps({"user_id": "u1", "template": "no_such_template", "event_id": "bad-1"}),
        orjson.dumps({"user_id": "u1", "template": "welcome", "event_id": "bad-2", "category": "undefined-one"}),
        orjson.dumps({"user_id": "u1", "template": "welcome"}),
    ]
    n = 30
    events: list[dict[str, Any] | bytes] = [event(i) for i in range(n)]
    for at, message in zip((3, 10, 17, 25), bad, strict=True):
        events.insert(at, message)
    run(kafka_broker.produce(TOPIC, events))
    proc, run_id = start_consume(ws, kafka_broker, "--json")
    try:
        webhook_sink.wait_for(n, timeout_s=30)
        wait_until(lambda: channel_states(ws, run_id).get(("webhook", "sent", ""), 0) == n)
    finally:
        code, summary, err = stop(proc)
    assert code == 0, err
    assert summary["consumed"] == n + len(bad) and summary["planned"] == n and summary["dead_lettered"] == len(bad)
    # Every event sent exactly once: one webhook-id each, n in all.
    by_id = collections.Counter(r.webhook_id for r in webhook_sink.requests)
    assert len(by_id) == n and set(by_id.values()) == {1}, by_id
    dead = run(kafka_broker.read_all(f"{TOPIC}.dlq", len(bad)))
    assert sorted(m.value for m in dead) == sorted(bad)
    reasons = {m.value: dict(m.headers)["notifyctl-reason"].decode() for m in dead}
    assert "not JSON" in reasons[bad[0]]
    assert "unknown template" in reasons[bad[1]]
    assert "undefined-one" in reasons[bad[2]]
    assert "event_id: Field required" in reasons[bad[3]]
    assert all(dict(m.headers)["notifyctl-topic"] == TOPIC.encode() for m in dead)
    # The group's offsets are at the end: nothing left to consume.
    status = ws.run("consume", "--kafka", kafka_broker.bootstrap, "--topic", TOPIC, "--status", "--json")
    assert status.returncode == 0, status.stderr
    lag = orjson.loads(status.stdout)
    assert lag["lag"] == 0 and sum(p["end"] for p in lag["partitions"]) == n + len(bad), lag
    # `serve` on the same database shows the consumer's lag in its /metrics.
    server = ws.popen("serve", "--port", "0")
    try:
        assert server.stderr is not None
        url = next(m[1] for raw in server.stderr if (m := re.search(r"listening on (http://\S+)", raw.decode())))
        text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=20)
    lags = re.findall(
        r'notifyctl_kafka_consumer_lag\{group="notifyctl",topic="notification.events",partition="(\d)"\} (\d+)', text
    )
    assert lags and {lag for _, lag in lags} == {"0"}, text


def test_redelivered_events_are_duplicates_and_replay_sends_only_a_new_channel(
    tmp_path: Path, kafka_broker: TansuBroker, webhook_sink: WebhookSink
) -> None:
    ws = workspace(tmp_path, webhook_sink)
    run(kafka_broker.create_topic(TOPIC))
    n = 12
    # Each event twice on the topic (a producer's retry): the second is a duplicate by its key.
    run(kafka_broker.produce(TOPIC, [event(i) for i in range(n)] * 2))
    proc, first = start_consume(ws, kafka_broker, "--json")
    try:
        wait_until(lambda: channel_states(ws, first).get(("webhook", "sent", ""), 0) == n)
        wait_until(lambda: channel_states(ws, first).get(("webhook", "skipped", "duplicate"), 0) == n)
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert len(webhook_sink.requests) == n

    # A channel is added, and the topic read again from its beginning by the same group.
    ws.config.write_text(ws.config.read_text().replace('webhook = "webhook"', 'webhook = "webhook"\ninapp = "inapp"'))
    proc, replay = start_consume(ws, kafka_broker, "--from-beginning", "--json")
    try:
        wait_until(lambda: channel_states(ws, replay).get(("inapp", "sent", ""), 0) == n)
        wait_until(lambda: channel_states(ws, replay).get(("webhook", "skipped", "duplicate"), 0) == 2 * n)
    finally:
        code, summary, err = stop(proc)
    assert code == 0, err
    assert summary["consumed"] == 2 * n
    states = channel_states(ws, replay)
    assert states == {("inapp", "sent", ""): n, ("inapp", "skipped", "duplicate"): n,
                      ("webhook", "skipped", "duplicate"): 2 * n}, states  # fmt: skip
    assert len(webhook_sink.requests) == n  # nothing sent again on the old channel


def test_send_events_reads_the_seeds_spellings(tmp_path: Path, webhook_sink: WebhookSink) -> None:
    """`send --events` and `consume` share one event model: userId, eventId and payload work in a file too."""
    ws = workspace(tmp_path, webhook_sink)
    lines = [
        {"userId": "u1", "template": "welcome", "eventId": "e-1", "payload": {"product_name": "A"}},
        {"user_id": "u2", "template": "welcome", "event_id": "e-2", "data": {"product_name": "B"}},
    ]
    events = ws.write("events.jsonl", "".join(orjson.dumps(line).decode() + "\n" for line in lines))
    result = ws.cli("send", "--events", str(events), "--json")
    assert result.exit_code == 0, result.output
    bodies = sorted(orjson.loads(r.body)["product_name"] for r in webhook_sink.wait_for(2))
    assert bodies == ["A", "B"]
    # Both spellings of one field at once is an error, not a silent choice.
    both = ws.write("both.jsonl", '{"user_id": "u1", "userId": "u2", "template": "welcome", "event_id": "e-3"}\n')
    result = ws.cli("send", "--events", str(both))
    assert result.exit_code == 2 and "userId" in result.stderr


def test_sigterm_finishes_in_flight_commits_and_the_next_start_finishes_the_rest(
    tmp_path: Path, kafka_broker: TansuBroker, webhook_sink: WebhookSink
) -> None:
    webhook_sink.on_path("/hook", stall(0.3))
    ws = workspace(tmp_path, webhook_sink, extra="")
    ws.config.write_text(ws.config.read_text().replace("concurrency = 16", "concurrency = 1"))
    run(kafka_broker.create_topic(TOPIC))
    n = 8
    run(kafka_broker.produce(TOPIC, [event(i) for i in range(n)]))
    proc, first = start_consume(ws, kafka_broker, "--json")
    try:
        wait_until(lambda: sum(channel_states(ws, first).values()) == n)  # all planned
        webhook_sink.wait_for(1, timeout_s=10)
    finally:
        code, summary, err = stop(proc)
    assert code == 0, err
    assert summary["planned"] == n
    states = channel_states(ws, first)
    assert not [k for k in states if k[1] == "inflight"], states  # the send in flight finished and was recorded
    assert states.get(("webhook", "pending", ""), 0) >= 1, states  # the rest waits in the outbox
    lag = orjson.loads(
        ws.run("consume", "--kafka", kafka_broker.bootstrap, "--topic", TOPIC, "--status", "--json").stdout
    )
    assert lag["lag"] == 0, lag  # every event is in the outbox: all committed

    proc, second = start_consume(ws, kafka_broker, "--json")  # finishes the earlier run at start
    try:
        wait_until(lambda: channel_states(ws, first) == {("webhook", "sent", ""): n}, timeout_s=30)
    finally:
        code, summary, err = stop(proc)
    assert code == 0, err
    assert summary["consumed"] == 0 and second != first
    by_id = collections.Counter(r.webhook_id for r in webhook_sink.requests)
    assert len(by_id) == n and set(by_id.values()) == {1}, by_id


def test_partitions_pause_while_the_backlog_is_at_max_pending(
    tmp_path: Path, kafka_broker: TansuBroker, webhook_sink: WebhookSink
) -> None:
    webhook_sink.on_path("/hook", stall(0.1))
    ws = workspace(tmp_path, webhook_sink, extra="[kafka]\nmax_pending = 3\nmax_batch = 2\n")
    ws.config.write_text(ws.config.read_text().replace("concurrency = 16", "concurrency = 1"))
    run(kafka_broker.create_topic(TOPIC))
    n = 20
    run(kafka_broker.produce(TOPIC, [event(i) for i in range(n)]))
    log: list[str] = []
    proc, run_id = start_consume(ws, kafka_broker, "--json", "--metrics-port", "0", log=log)
    metrics_url = next(m[1] for line in log if (m := re.search(r"metrics on (\S+)", line)))
    most_unsettled, paused_seen, lag_seen = 0, False, False
    try:
        deadline = time.monotonic() + 40
        while channel_states(ws, run_id).get(("webhook", "sent", ""), 0) < n and time.monotonic() < deadline:
            states = channel_states(ws, run_id)
            most_unsettled = max(most_unsettled, sum(v for k, v in states.items() if k[1] in ("pending", "inflight")))
            text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
            paused_seen = paused_seen or "notifyctl_kafka_paused 1" in text
            lag_seen = lag_seen or bool(
                re.search(r'notifyctl_kafka_consumer_lag\{topic="notification.events",partition="\d"\} [1-9]', text)
            )
            time.sleep(0.05)
    finally:
        code, summary, err = stop(proc)
    assert code == 0, err
    assert channel_states(ws, run_id) == {("webhook", "sent", ""): n}
    assert summary["pauses"] >= 1 and paused_seen and lag_seen, (summary, paused_seen, lag_seen)
    # Never more than the bound plus the one batch planned before the check saw it.
    assert most_unsettled <= 3 + 2, most_unsettled
    assert len({r.webhook_id for r in webhook_sink.requests}) == n == len(webhook_sink.requests)


def test_consume_on_redis_delivers_through_the_workers(
    tmp_path: Path, kafka_broker: TansuBroker, webhook_sink: WebhookSink
) -> None:
    """`consume --redis URL`: the consumer plans and publishes, `notifyctl worker` processes send."""
    from tests.redis_server import RedisServer

    ws = workspace(tmp_path, webhook_sink)
    run(kafka_broker.create_topic(TOPIC))
    n = 10
    run(kafka_broker.produce(TOPIC, [event(i) for i in range(n)]))
    with RedisServer() as redis:
        worker = ws.popen("worker", "--redis", redis.url, "--visibility-timeout", "1")
        try:
            proc, run_id = start_consume(ws, kafka_broker, "--redis", redis.url, "--json")
            try:
                wait_until(lambda: channel_states(ws, run_id).get(("webhook", "sent", ""), 0) == n, timeout_s=40)
            finally:
                code, summary, err = stop(proc)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.communicate()
    assert code == 0, err
    assert summary["planned"] == n
    by_id = collections.Counter(r.webhook_id for r in webhook_sink.requests)
    assert len(by_id) == n and set(by_id.values()) == {1}, by_id


def test_two_consumers_of_one_group_share_the_partitions_and_send_each_event_once(
    tmp_path: Path, kafka_broker: TansuBroker, webhook_sink: WebhookSink
) -> None:
    """A second consumer joins (a rebalance) mid-stream, and the first leaves: each event sent once."""
    ws = workspace(tmp_path, webhook_sink)
    run(kafka_broker.create_topic(TOPIC))
    n = 40
    run(kafka_broker.produce(TOPIC, [event(i) for i in range(n // 2)]))
    first, run_a = start_consume(ws, kafka_broker, "--json")
    second, run_b = start_consume(ws, kafka_broker, "--json")
    try:
        run(kafka_broker.produce(TOPIC, [event(i) for i in range(n // 2, n)]))
        webhook_sink.wait_for(n // 2, timeout_s=30)
        code_a, summary_a, err_a = stop(first)  # leaves: its partitions move to the second
        run(kafka_broker.produce(TOPIC, [event(i) for i in range(n, n + 10)]))
        webhook_sink.wait_for(n + 10, timeout_s=40)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                code_b, summary_b, err_b = stop(proc)
    assert code_a == 0 and code_b == 0, err_a + err_b
    by_id = collections.Counter(r.webhook_id for r in webhook_sink.requests)
    assert len(by_id) == n + 10 and set(by_id.values()) == {1}, by_id
    assert summary_a["consumed"] + summary_b["consumed"] >= n + 10
    assert run_a != run_b
