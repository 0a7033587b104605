"""Rows caught `inflight` by a crash: re-sent where the receiver dedupes, held for the operator otherwise."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.fakes.twilio import FakeTwilio
from tests.workspace import Workspace, campaign_toml, make_workspace


def sms_workspace(tmp_path: Path, twilio: FakeTwilio, top: str = "") -> Workspace:
    ws = make_workspace(
        tmp_path,
        top=top,
        providers={"twilio": {"type": "twilio", "rate": 100, **twilio.provider_settings()}},
        channels={"sms": "twilio", "inapp": "inapp"},
    )
    ws.write("users.csv", "user_id,phone,first_name\nu1,+14155552671,Ada\nu2,+12125550123,Bob\n")
    ws.write("aud.csv", "user_id,order_id,carrier,tracking_url\nu1,A1,UPS,https://t/1\nu2,A2,UPS,https://t/2\n")
    ws.write("c.toml", campaign_toml("c1", "order_shipped", ["sms", "inapp"], "aud.csv"))
    assert ws.cli("users", "import", "users.csv").exit_code == 0
    return ws


def simulate_crash_mid_send(ws: Workspace, run_id: str) -> None:
    """What kill -9 between the intent commit and the outcome commit leaves behind."""
    with ws.db() as conn:
        conn.execute("UPDATE deliveries SET state='inflight' WHERE run_id=? AND user_id='u1'", (run_id,))
        conn.execute(
            "UPDATE attempts SET outcome='inflight' WHERE delivery_id IN "
            "(SELECT id FROM deliveries WHERE run_id=? AND user_id='u1')",
            (run_id,),
        )
        conn.execute("UPDATE runs SET state='running' WHERE run_id=?", (run_id,))


def test_non_idempotent_in_doubt_rows_are_held_then_redriven(tmp_path: Path) -> None:
    with FakeTwilio() as twilio:
        ws = sms_workspace(tmp_path, twilio)
        run_id = orjson.loads(ws.cli("broadcast", "c.toml", "--json").stdout)["run_id"]
        assert len(twilio.sent) == 2
        simulate_crash_mid_send(ws, run_id)
        resumed = ws.cli("resume", run_id, "--json")
        assert resumed.exit_code == 1  # something is held for the operator
        with ws.db() as conn:
            rows = {
                r["channel"]: dict(r)
                for r in conn.execute("SELECT channel, state, in_doubt FROM deliveries WHERE user_id='u1'")
            }
            outcomes = [
                r[0]
                for r in conn.execute(
                    "SELECT a.outcome FROM attempts a JOIN deliveries d ON d.id=a.delivery_id WHERE d.user_id='u1' "
                    "ORDER BY a.id"
                )
            ]
        assert rows["sms"] == {"channel": "sms", "state": "in_doubt", "in_doubt": 1}  # Twilio cannot dedupe
        assert rows["inapp"] == {"channel": "inapp", "state": "sent", "in_doubt": 1}  # the inbox dedupes
        assert "in_doubt" in outcomes
        assert len(twilio.sent) == 2  # nothing re-sent to the phone
        with ws.db() as conn:
            assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 2  # the re-sent in-app row deduped

        redriven = ws.cli("dlq", "redrive", "--in-doubt", "--all", "--json")
        assert redriven.exit_code == 0, redriven.output
        assert orjson.loads(redriven.stdout)["counts"] == {"sms": {"sent": 1}}
        assert len(twilio.sent) == 3


def test_in_doubt_resend_setting_resends_everything(tmp_path: Path) -> None:
    with FakeTwilio() as twilio:
        ws = sms_workspace(tmp_path, twilio, top='in_doubt = "resend"')
        run_id = orjson.loads(ws.cli("broadcast", "c.toml", "--json").stdout)["run_id"]
        simulate_crash_mid_send(ws, run_id)
        resumed = ws.cli("resume", run_id, "--json")
        assert resumed.exit_code == 0, resumed.output
        assert len(twilio.sent) == 3
        with ws.db() as conn:
            assert conn.execute("SELECT count(*) FROM deliveries WHERE in_doubt=1").fetchone()[0] == 2
