"""Push token hygiene in the pipeline: a token gone for good is skipped (not dead) and removed, and a
wrong configuration never passes for token churn (pipeline/churn.py): no token is removed then."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from notifyctl.errors import PermanentError, ProviderMisconfigured, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.pipeline import outcomes
from notifyctl.pipeline.churn import ChurnGuard
from notifyctl.pipeline.outcomes import Kind, Outcome
from tests.fakes.fcm import FakeFcm
from tests.provider_fixtures import ORDER_DATA
from tests.workspace import Workspace, campaign_toml, make_workspace

pytest_plugins = ("tests.provider_fixtures",)

CAUSE = "the key of another project"


def gone() -> PermanentError:
    return PermanentError("fcm: UNREGISTERED", code="UNREGISTERED", remove_device=True, token_gone=True)


def suspect() -> PermanentError:
    return PermanentError(
        "fcm: SENDER_ID_MISMATCH", code="SENDER_ID_MISMATCH", remove_device=True, config_suspect=CAUSE
    )


def ok() -> SendResult:
    return SendResult(provider="fcm", provider_message_id="m")


def envelope(delivery_id: int = 7) -> Envelope:
    return Envelope(
        delivery_id=delivery_id,
        run_id="run-1",
        channel="push",
        user_id="u1",
        address="tok-1",
        template="t",
        template_version="v1",
        category="transactional",
        idempotency_key="k",
        message_id="msg-1",
        parts={"title": "hi"},
    )


# --- the outcome of a token gone for good -----------------------------------------------------------


def test_a_token_gone_for_good_is_a_settled_skip_that_removes_the_token_and_crosses_to_the_coordinator() -> None:
    outcome = outcomes.failed(envelope(), 1, "fcm", gone(), 12.5, retry_at=None, resend=False)

    assert outcome.kind is Kind.rejected
    assert (outcome.state, outcome.reason, outcome.effects) == ("skipped", "token_unregistered", ("remove_device",))
    assert outcome.final and outcome.progress_state == "skipped"
    assert outcome.envelope is None  # no dead letter
    # A Redis worker carries it to the coordinator as it is.
    assert Outcome.from_fields(orjson.loads(orjson.dumps(outcome.as_fields()))) == outcome

    dead = outcomes.failed(envelope(), 1, "fcm", suspect(), 12.5, retry_at=None, resend=False)
    assert (dead.state, dead.progress_state, dead.effects) == (None, "dead", ("remove_device",))
    assert dead.envelope is not None


# --- the guard, call by call ------------------------------------------------------------------------


def screen(guard: ChurnGuard, answers: list[Any]) -> list[Any]:
    guard.screen("fcm", answers, range(len(answers)))
    return answers


def kinds(answers: list[Any]) -> list[str]:
    def kind(answer: Any) -> str:
        if isinstance(answer, ProviderMisconfigured):
            return "stopped"
        if isinstance(answer, TransientError):
            return "held"
        if isinstance(answer, PermanentError):
            return "suspect" if answer.config_suspect else "gone"
        return "sent"

    return [kind(answer) for answer in answers]


def test_a_call_whose_answers_are_mostly_suspect_stops_the_provider() -> None:
    guard = ChurnGuard()

    answers = screen(guard, [suspect()] * 8 + [ok(), gone(), ok()] + [suspect()] * 3)

    assert kinds(answers) == ["stopped"] * 8 + ["sent", "gone", "sent"] + ["stopped"] * 3
    stopped = guard.refusal("fcm")
    assert isinstance(stopped, ProviderMisconfigured) and stopped.code == "SENDER_ID_MISMATCH"
    assert str(stopped) == (
        "provider 'fcm' stopped: 11 of the 14 answers of one call were SENDER_ID_MISMATCH, which a wrong "
        f"configuration also gives: most likely {CAUSE}, not token churn. No token was removed; fix "
        "[providers.fcm], then redrive the dead letters"
    )
    assert guard.refusal("apns") is None


def test_single_sends_are_held_until_more_than_half_of_the_first_twenty_are_suspect() -> None:
    guard = ChurnGuard()

    held = [kinds(screen(guard, [suspect()]))[0] for _ in range(10)]
    eleventh = screen(guard, [suspect()])

    assert held == ["held"] * 10  # retried later; nothing removed yet
    assert kinds(eleventh) == ["stopped"]
    assert "11 of its first 11 answers were SENDER_ID_MISMATCH" in str(eleventh[0])
    assert kinds(screen(guard, [ok()])) == ["sent"]  # an answer already given stays what it was


def test_once_the_first_twenty_answers_were_mostly_fine_a_suspect_error_is_churn() -> None:
    guard = ChurnGuard()

    first = screen(guard, [suspect()])
    for _ in range(18):
        screen(guard, [ok()])
    twentieth = screen(guard, [suspect()])  # it closes the window: 2 of 20
    later = screen(guard, [suspect(), ok()])

    assert kinds(first) == ["held"]
    assert kinds(twentieth) == ["suspect"] and kinds(later) == ["suspect", "sent"]  # rejected; token removed
    assert guard.refusal("fcm") is None


def test_a_small_call_with_a_few_suspect_answers_is_held_while_the_window_is_open() -> None:
    guard = ChurnGuard()

    answers = screen(guard, [suspect(), ok(), ok(), suspect(), ok()])

    assert kinds(answers) == ["held", "sent", "sent", "held", "sent"]
    assert kinds(screen(guard, [gone()])) == ["gone"]  # churn is never the guard's business


def test_each_provider_is_judged_on_its_own_answers() -> None:
    guard = ChurnGuard()
    screen(guard, [suspect()] * 12)
    guard.screen("fcm-b", answers := [suspect()], [0])
    assert kinds(answers) == ["held"] and guard.refusal("fcm-b") is None


# --- end to end: a broadcast with the FCM fake ----------------------------------------------------------


def push_workspace(tmp_path: Path, fcm: FakeFcm, key_file: Path, tokens: list[str]) -> Workspace:
    provider = {"type": "fcm", **fcm.provider_settings(key_file), "timeout_s": 2, "concurrency": 4}
    ws = make_workspace(tmp_path, providers={"fcm": provider}, channels={"push": "fcm"})
    ws.write("users.csv", "user_id,push_tokens\n" + "".join(f"u{i},{t}\n" for i, t in enumerate(tokens)))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    ws.write("aud.csv", "user_id,first_name\n" + "".join(f"u{i},Ada\n" for i in range(len(tokens))))
    ws.write("c.toml", campaign_toml("c1", "order_shipped", ["push"], "aud.csv", ORDER_DATA))
    return ws


def rows(ws: Workspace) -> list[tuple[Any, ...]]:
    with ws.db() as conn:
        return [
            tuple(row) for row in conn.execute("SELECT address, state, reason, error_class FROM deliveries ORDER BY id")
        ]


def device_count(ws: Workspace) -> int:
    with ws.db() as conn:
        return int(conn.execute("SELECT count(*) FROM devices").fetchone()[0])


def test_unregistered_tokens_leave_a_cron_broadcast_at_exit_0(
    tmp_path: Path, fcm_api: FakeFcm, fcm_key_file: Path
) -> None:
    tokens = [f"tok-{i}" for i in range(6)]
    ws = push_workspace(tmp_path, fcm_api, fcm_key_file, tokens)
    fcm_api.unregister("tok-1", "tok-4")

    result = ws.cli("broadcast", "c.toml", "--json")

    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["counts"] == {"push": {"sent": 4, "skipped": 2}}
    assert {row[0]: row[1:] for row in rows(ws) if row[1] != "sent"} == {
        "tok-1": ("skipped", "token_unregistered", None),
        "tok-4": ("skipped", "token_unregistered", None),
    }
    assert device_count(ws) == 4


def test_a_wrong_project_stops_the_provider_and_keeps_every_token(
    tmp_path: Path, fcm_api: FakeFcm, fcm_key_file: Path
) -> None:
    tokens = [f"tok-{i}" for i in range(30)]
    ws = push_workspace(tmp_path, fcm_api, fcm_key_file, tokens)
    fcm_api.register_elsewhere(*tokens)  # what every token answers when the key is another project's

    result = ws.cli("broadcast", "c.toml")

    said = " ".join(result.stderr.split())
    assert result.exit_code == 1  # deliveries failed: dead, each with the configuration error
    assert "error: provider 'fcm' stopped:" in said and "of another Firebase project than the app's" in said
    assert "No token was removed" in said and "notifyctl dlq redrive --run run_" in said
    assert {row[1:] for row in rows(ws)} == {("dead", None, "ProviderMisconfigured")}
    assert device_count(ws) == 30

    fcm_api.clear()  # the configuration fixed: the same tokens are accepted
    run_id = ws.cli("runs", "list", "--json")
    redriven = ws.cli("dlq", "redrive", "--run", orjson.loads(run_id.stdout)[0]["run_id"], "--json")
    assert redriven.exit_code == 0, redriven.stderr
    assert sorted(message["message"]["token"] for message in fcm_api.sent) == sorted(tokens)


def test_a_few_tokens_of_another_sender_among_good_ones_are_churn(
    tmp_path: Path, fcm_api: FakeFcm, fcm_key_file: Path
) -> None:
    tokens = [f"tok-{i}" for i in range(30)]
    ws = push_workspace(tmp_path, fcm_api, fcm_key_file, tokens)
    fcm_api.register_elsewhere("tok-3", "tok-17")

    result = ws.cli("broadcast", "c.toml", "--json")

    assert result.exit_code == 1  # a token of another sender is not routine: a dead letter to look at
    assert orjson.loads(result.stdout)["problems"] == []
    failed = {row[0]: row[1:] for row in rows(ws) if row[1] != "sent"}
    assert failed == {"tok-3": ("dead", None, "PermanentError"), "tok-17": ("dead", None, "PermanentError")}
    assert device_count(ws) == 28  # removed, as before the guard
