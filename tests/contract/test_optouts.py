"""Every kind of opt-out, mid-run: no message to that person after the opt-out committed. On every path.

A campaign goes to u1..u40 on webhook, SMS and email at 10 messages a second per channel. Once the
first messages arrive, eight recipients at the end of the audience opt out, each a different way:
a preference turned off, a suppression, an erasure (`users forget`), a one-click unsubscribe, an
SMS STOP, consent withdrawn (marketing SMS needs it), an SES bounce and an SES complaint. Whatever
was already on its way (published to Redis workers included) must not reach them afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path as FsPath
from urllib.parse import parse_qs

import aiohttp
import orjson
import pytest
from twilio.request_validator import RequestValidator

from notifyctl.security.unsubscribe import make_token
from tests.contract.conftest import Setup
from tests.contract.paths import Api, Path
from tests.contract.world import PUBLIC_URL, UNSUBSCRIBE_SECRET, World, email, phone, wait_until
from tests.fakes.sns import ses_bounce, ses_complaint

N = 40
RATE = 10.0


def post(url: str, **kwargs: object) -> int:
    """One HTTP POST from this (synchronous) test: the status."""
    import asyncio

    async def go() -> int:
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
            http.post(url, allow_redirects=False, **kwargs) as resp,  # type: ignore[arg-type]
        ):
            await resp.read()
            return resp.status

    return asyncio.run(go())


def inbound_url(world: World, path: Path) -> str:
    """Where `notifyctl serve` takes STOPs, unsubscribes and bounces: the API path's own server, or
    one started beside the run on the same database."""
    if isinstance(path, Api):
        return path.url
    _, url = world.serve()
    return url


def opt_outs(world: World, url: str) -> dict[tuple[str, str], tuple[float, float]]:
    """Each kind of opt-out, one recipient each; {(user, channel): (monotonic, wall) time it was done}."""
    done: dict[tuple[str, str], tuple[float, float]] = {}

    def mark(user: str, *channels: str) -> None:
        for channel in channels:
            done[(user, channel)] = (time.monotonic(), time.time())

    def cli(*args: str) -> None:
        result = world.ws.cli(*args)
        assert result.exit_code == 0, result.output

    cli("prefs", "set", "u31", "--channel", "webhook", "--category", "marketing", "--off")
    mark("u31", "webhook")
    cli("suppress", "add", "webhook", world.sink.url("/u32"), "--reason", "manual")
    mark("u32", "webhook")
    cli("users", "forget", "u33", "--yes")
    mark("u33", "webhook", "sms", "email")
    token = make_token(UNSUBSCRIBE_SECRET, "u34", "webhook", "marketing")
    assert post(f"{url}/u/{token}", data={"List-Unsubscribe": "One-Click"}) == 200
    mark("u34", "webhook")
    stop = {"MessageSid": "SM" + "5" * 32, "From": phone(35), "To": "+15005550006", "Body": "STOP"}
    signature = RequestValidator(world.twilio.auth_token).compute_signature(PUBLIC_URL + "/hooks/twilio/inbound", stop)
    assert post(f"{url}/hooks/twilio/inbound", data=stop, headers={"X-Twilio-Signature": signature}) == 200
    mark("u35", "sms")
    cli("prefs", "set", "u36", "--channel", "sms", "--category", "marketing", "--off")  # consent withdrawn
    mark("u36", "sms")
    for user, event in (
        ("u37", ses_bounce(email(37), message_id="m37")),
        ("u38", ses_complaint(email(38), message_id="m38")),
    ):
        note = world.sns.notification(event)
        headers = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain; charset=UTF-8"}
        assert post(f"{url}/hooks/ses", data=orjson.dumps(note), headers=headers) == 200
        mark(user, "email")
    return done


def received(world: World) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Every message each recipient got, per channel: (monotonic, wall) times of arrival."""
    by: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for request in world.sink.requests:
        by.setdefault((request.path.lstrip("/"), "webhook"), []).append(
            (request.received_monotonic, request.received_at)
        )
    phones = {phone(i): f"u{i}" for i in range(1, N + 1)}
    for request in world.twilio.message_requests:
        to = parse_qs(request.body.decode()).get("To", [""])[0]
        by.setdefault((phones.get(to, to), "sms"), []).append((request.received_monotonic, 0.0))
    emails = {email(i): f"u{i}" for i in range(1, N + 1)}
    for eml in sorted((world.root / "outbox").glob("*.eml")):
        to = str(message_from_bytes(eml.read_bytes())["To"] or "")
        user = next((u for address, u in emails.items() if address in to), to)
        by.setdefault((user, "email"), []).append((0.0, eml.stat().st_mtime))
    return by


def test_every_kind_of_opt_out_holds_before_the_next_message(contract: Setup, tmp_path: FsPath) -> None:
    world, path = contract(N, rate=RATE, burst=1)
    url = "" if isinstance(path, Api) else inbound_url(world, path)  # ready before the run starts
    path.start("all.toml")
    wait_until(lambda: len(world.sink.requests) >= 3, 60, "the first messages")
    done = opt_outs(world, url or inbound_url(world, path))
    finished = path.finish()
    assert finished.code == 0, finished.err[-3000:]

    got = received(world)
    late = {key: [t for t in got.get(key, []) if t[0] > when[0] or t[1] > when[1]] for key, when in done.items()}
    assert not {key: times for key, times in late.items() if times}, "messages after the opt-out committed"
    # They were at the end of the audience: none of them was reached at all, and each is recorded so.
    assert not {key: got[key] for key in done if got.get(key)}
    reasons = skipped_reasons(world)
    expected: dict[tuple[str, str], Callable[[str], bool]] = {
        ("u31", "webhook"): lambda r: r == "preference_off",
        ("u32", "webhook"): lambda r: r == "suppressed:manual",
        ("u34", "webhook"): lambda r: r == "preference_off",
        ("u35", "sms"): lambda r: r in ("suppressed:stop", "preference_off"),
        ("u36", "sms"): lambda r: r == "preference_off",
        ("u37", "email"): lambda r: r == "suppressed:bounce",
        ("u38", "email"): lambda r: r == "suppressed:complaint",
    }
    for key, check in expected.items():
        assert check(reasons.get(key, "")), (key, reasons.get(key))
    erased = [reason for (user, _), reason in reasons.items() if user.startswith("erased:")]
    assert sorted(erased) == ["suppressed:erased"] * 3  # u33 on all three channels, under erased labels
    # Everyone else got each channel's message once.
    for i in range(1, 31):
        for channel in ("webhook", "sms", "email"):
            assert len(got.get((f"u{i}", channel), [])) == 1, (i, channel)
    assert world.integrity() == "ok"


def skipped_reasons(world: World) -> dict[tuple[str, str], str]:
    with world.db() as conn:
        return {
            (row["user_id"], row["channel"]): row["reason"]
            for row in conn.execute("SELECT user_id, channel, reason FROM deliveries WHERE state='skipped'")
        }


@pytest.fixture(autouse=True)
def _no_quiet_hours() -> None:
    """The workspace turns quiet hours off (tests/contract/world.py), whatever the hour of the run."""
