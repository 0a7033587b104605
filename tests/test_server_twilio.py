"""Twilio webhooks against the running app, signed with the twilio package's real algorithm."""

from __future__ import annotations

import asyncio
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from twilio.request_validator import RequestValidator

from tests.fakes.twilio import FakeTwilio
from tests.test_server_harness import Running, eventually, running
from tests.workspace import Workspace, campaign_toml, make_workspace

PUBLIC_URL = "https://notify.example.com"
SHARED_PHONE = "+14155552605"
CHANNELS = {"email": "outbox", "inapp": "inapp", "webhook": "webhook", "sms": "twilio"}
ORDER = {"order_id": "A-1", "carrier": "UPS", "tracking_url": "https://t.example/A-1"}


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def phone_of(i: int) -> str:
    return SHARED_PHONE if i % 5 == 0 else f"+1415555{2600 + i}"


def sms_workspace(tmp_path: Path, twilio: FakeTwilio, n: int = 3, **provider: Any) -> Workspace:
    conf = {"type": "twilio", **twilio.provider_settings(), "rate": 1000, "concurrency": 4, **provider}
    # Twilio signs the URL it called: public_url's, as configured in its console.
    ws = make_workspace(tmp_path, providers={"twilio": conf}, channels=CHANNELS, top=f"public_url = {PUBLIC_URL!r}")
    rows = ["user_id,phone,first_name,locale"] + [f"u{i},{phone_of(i)},Name{i},en" for i in range(1, n + 1)]
    result = ws.cli("users", "import", str(ws.write("users.csv", "\n".join(rows) + "\n")))
    assert result.exit_code == 0, result.stderr
    return ws


async def post_signed(
    srv: Running,
    path: str,
    params: dict[str, str],
    *,
    token: str,
    signed_url: str | None = None,
    tamper: dict[str, str] | None = None,
) -> tuple[int, str]:
    """POST a form as Twilio does: signed over the public URL it called, the form's fields sorted."""
    signature = RequestValidator(token).compute_signature(signed_url or PUBLIC_URL + path, params)
    async with srv.http.post(
        srv.url + path, data={**params, **(tamper or {})}, headers={"X-Twilio-Signature": signature}
    ) as resp:
        return resp.status, await resp.text()


def sms_in(body: str, sid: str = "SM" + "a" * 32, sender: str = SHARED_PHONE) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }


def audit(ws: Workspace, kind: str) -> list[dict[str, Any]]:
    with ws.db() as conn:
        return [orjson.loads(r[0]) for r in conn.execute("SELECT detail FROM audit_events WHERE kind=?", (kind,))]


def suppression(ws: Workspace, phone: str = SHARED_PHONE) -> str | None:
    with ws.db() as conn:
        row = conn.execute("SELECT reason FROM suppressions WHERE channel='sms' AND address=?", (phone,)).fetchone()
    return None if row is None else str(row[0])


def sms_preferences(ws: Workspace) -> dict[str, int]:
    with ws.db() as conn:
        return dict(conn.execute("SELECT user_id, enabled FROM preferences WHERE channel='sms' AND category='*'"))


def test_signature_helper_matches_twilios_documented_example() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert RequestValidator("12345").compute_signature(url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


@pytest.mark.parametrize(
    ("body", "opted_out"),
    [
        pytest.param("STOP", True, id="STOP"),
        pytest.param("stop", True, id="lower"),
        pytest.param("Stop.", True, id="punctuation"),
        pytest.param("  unsubscribe!  ", True, id="UNSUBSCRIBE-spaces"),
        pytest.param("StopAll", True, id="STOPALL"),
        pytest.param("cancel", True, id="CANCEL"),
        pytest.param("END", True, id="END"),
        pytest.param("quit", True, id="QUIT"),
        pytest.param("Revoke", True, id="REVOKE"),
        pytest.param("opt-out", True, id="OPTOUT-hyphen"),
        pytest.param("stop please", False, id="not-whole-message"),
        pytest.param("Don't stop", False, id="inside-a-sentence"),
        pytest.param("Thanks!", False, id="ordinary"),
    ],
)
async def test_opt_out_keywords(tmp_path: Path, twilio: FakeTwilio, body: str, opted_out: bool) -> None:
    ws = sms_workspace(tmp_path, twilio, n=5)
    async with running(ws) as srv:
        status, text = await post_signed(srv, "/hooks/twilio/inbound", sms_in(body), token=twilio.auth_token)
    assert status == 200
    assert ET.fromstring(text).tag == "Response" and len(ET.fromstring(text)) == 0
    if opted_out:
        assert suppression(ws) == "stop"
        assert sms_preferences(ws) == {"u5": 0}
        [event] = audit(ws, "sms_opt_out")
        assert event["message_sid"] == "SM" + "a" * 32
        assert event["users"] == ["u5"]
        assert SHARED_PHONE not in orjson.dumps(event).decode()  # masked in the audit log
    else:
        assert suppression(ws) is None
        assert sms_preferences(ws) == {}


@pytest.mark.parametrize(
    ("variant", "accepted"),
    [
        pytest.param("valid", True, id="valid"),
        pytest.param("url-with-port", True, id="signed-with-port-443"),
        pytest.param("tampered-body", False, id="tampered-body"),
        pytest.param("tampered-sender", False, id="tampered-sender"),
        pytest.param("wrong-token", False, id="wrong-auth-token"),
        pytest.param("internal-url", False, id="signed-for-the-internal-url"),
    ],
)
async def test_signature_is_required(tmp_path: Path, twilio: FakeTwilio, variant: str, accepted: bool) -> None:
    ws = sms_workspace(tmp_path, twilio, n=5)
    path = "/hooks/twilio/inbound"
    kwargs: dict[str, Any] = {"token": twilio.auth_token}
    if variant == "url-with-port":
        kwargs["signed_url"] = "https://notify.example.com:443" + path
    elif variant == "tampered-body":
        kwargs["tamper"] = {"Body": "STOP"}
    elif variant == "tampered-sender":
        kwargs["tamper"] = {"From": "+14155552601"}
    elif variant == "wrong-token":
        kwargs["token"] = "0" * 32
    params = sms_in("STOP" if variant != "tampered-body" else "hello")
    async with running(ws) as srv:
        if variant == "internal-url":
            kwargs["signed_url"] = srv.url + path
        status, text = await post_signed(srv, path, params, **kwargs)
    if accepted:
        assert status == 200
        assert suppression(ws) == "stop"
        assert audit(ws, "webhook_signature_rejected") == []
    else:
        assert status == 403
        assert orjson.loads(text)["error"]["status"] == 403
        assert suppression(ws) is None and suppression(ws, "+14155552601") is None
        [event] = audit(ws, "webhook_signature_rejected")
        assert event["source"] == "twilio"
        signature = RequestValidator(kwargs["token"]).compute_signature(
            kwargs.get("signed_url") or PUBLIC_URL + path, params
        )
        assert signature not in orjson.dumps(event).decode()


async def test_missing_signature_is_refused(tmp_path: Path, twilio: FakeTwilio) -> None:
    ws = sms_workspace(tmp_path, twilio)
    async with running(ws) as srv, srv.http.post(srv.url + "/hooks/twilio/inbound", data=sms_in("STOP")) as resp:
        assert resp.status == 403
    assert suppression(ws) is None


async def test_help_answers_with_help_text(tmp_path: Path, twilio: FakeTwilio) -> None:
    ws = sms_workspace(tmp_path, twilio)
    async with running(ws) as srv:
        status, text = await post_signed(srv, "/hooks/twilio/inbound", sms_in("help"), token=twilio.auth_token)
    assert status == 200
    message = ET.fromstring(text).find("Message")
    assert message is not None and "Reply STOP" in (message.text or "")
    assert suppression(ws) is None


async def test_start_undoes_stop_but_not_an_operators_suppression(tmp_path: Path, twilio: FakeTwilio) -> None:
    ws = sms_workspace(tmp_path, twilio, n=5)
    async with running(ws) as srv:
        await post_signed(srv, "/hooks/twilio/inbound", sms_in("STOP", sid="SM1"), token=twilio.auth_token)
        assert suppression(ws) == "stop" and sms_preferences(ws) == {"u5": 0}
        status, _ = await post_signed(srv, "/hooks/twilio/inbound", sms_in("Start", sid="SM2"), token=twilio.auth_token)
        assert status == 200
        assert suppression(ws) is None
        assert sms_preferences(ws) == {}  # back to what the user had said before (nothing)
        [event] = audit(ws, "sms_opt_in")
        assert event["suppression_lifted"] is True and event["message_sid"] == "SM2"
    result = ws.cli("suppress", "add", "sms", "+14155552601", "--reason", "manual")
    assert result.exit_code == 0, result.stderr
    async with running(ws) as srv:
        await post_signed(
            srv, "/hooks/twilio/inbound", sms_in("YES", sid="SM3", sender="+14155552601"), token=twilio.auth_token
        )
    assert suppression(ws, "+14155552601") == "manual"


async def test_a_retried_message_acts_once(tmp_path: Path, twilio: FakeTwilio) -> None:
    ws = sms_workspace(tmp_path, twilio, n=5)
    async with running(ws) as srv:
        for _ in range(3):
            status, _ = await post_signed(srv, "/hooks/twilio/inbound", sms_in("STOP"), token=twilio.auth_token)
            assert status == 200
    assert len(audit(ws, "sms_opt_out")) == 1
    with ws.db() as conn:
        assert conn.execute("SELECT count(*) FROM inbound_messages").fetchone()[0] == 1


async def test_status_callbacks_update_the_receipt_without_going_backwards(tmp_path: Path, twilio: FakeTwilio) -> None:
    ws = sms_workspace(tmp_path, twilio)
    async with running(ws) as srv:
        status, body = await srv.api(
            "POST",
            "/v1/notify",
            json={"user_id": "u1", "template": "order_shipped", "channels": ["sms"], "data": ORDER},
        )
        assert status == 202, body
        await eventually(lambda: len(twilio.sent) == 1)
        delivery_id = body["delivery_ids"][0]
        await eventually(lambda: ws.states().get("sent") == 1)
        sid = twilio.sent[0]["Sid"]

        def receipt() -> str | None:
            with ws.db() as conn:
                row = conn.execute("SELECT receipt_status FROM deliveries WHERE id=?", (delivery_id,)).fetchone()
            return None if row is None else row[0]

        for status_name, expected in [("sent", "sent"), ("delivered", "delivered"), ("sent", "delivered")]:
            status, _ = await post_signed(
                srv,
                "/hooks/twilio/status",
                {"MessageSid": sid, "MessageStatus": status_name, "AccountSid": "AC1"},
                token=twilio.auth_token,
            )
            assert status == 200
            assert receipt() == expected
        status, _ = await post_signed(
            srv,
            "/hooks/twilio/status",
            {"MessageSid": sid, "MessageStatus": "delivered"},
            token=twilio.auth_token,
            tamper={"MessageStatus": "failed"},
        )
        assert status == 403
        assert receipt() == "delivered"
    receipts = audit(ws, "delivery_receipt")
    assert [r["status"] for r in receipts] == ["sent", "delivered"]


async def test_stop_during_a_running_broadcast_stops_the_rest_of_that_numbers_sms(
    tmp_path: Path, twilio: FakeTwilio
) -> None:
    """20 recipients at 10 SMS/s through one Twilio worker; u5, u10, u15 and u20 share a number.
    STOP from that number right after u5's message: u10, u15 and u20 are not texted."""
    ws = sms_workspace(tmp_path, twilio, n=20, rate=10, burst=1, concurrency=1)
    ws.write("audience.csv", "user_id\n" + "".join(f"u{i}\n" for i in range(1, 21)))
    campaign = ws.write("campaign.toml", campaign_toml("ship-1", "order_shipped", ["sms"], "audience.csv", ORDER))
    async with running(ws) as srv:
        proc = ws.popen("broadcast", str(campaign), "--json")
        try:
            await eventually(lambda: any(m["To"] == SHARED_PHONE for m in twilio.sent), timeout_s=30)
            status, _ = await post_signed(srv, "/hooks/twilio/inbound", sms_in("STOP"), token=twilio.auth_token)
            assert status == 200
            stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=60)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    assert proc.returncode == 0, stderr.decode()
    texted = [m["To"] for m in twilio.sent]
    assert texted.count(SHARED_PHONE) == 1
    assert len(texted) == 17
    with ws.db() as conn:
        skipped = dict(conn.execute("SELECT user_id, reason FROM deliveries WHERE state='skipped'"))
    assert skipped == {"u10": "suppressed:stop", "u15": "suppressed:stop", "u20": "suppressed:stop"}
    assert orjson.loads(stdout)["counts"]["sms"]["sent"] == 17
    assert isinstance(proc, subprocess.Popen)
