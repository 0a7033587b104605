"""Policy: suppression, critical categories, preferences, consent and quiet hours."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifyctl.errors import ConfigError
from notifyctl.models import Decision
from notifyctl.policy.decide import NO_COMMON_WINDOW, QUIET_HOURS, Policy, next_allowed, recipient_zones
from notifyctl.settings import Settings, load_settings
from notifyctl.store.db import connect
from notifyctl.store.directory import add_suppression, set_preference

NY_PHONE = "+12125551234"  # 212: Manhattan, America/New_York only
NL_PHONE = "+17095550123"  # 709: Newfoundland and Labrador, America/Halifax and America/St_Johns
TOLL_FREE = "+18005551234"  # 800: every NANP zone, Pacific/Guam (+10) to Pacific/Pago_Pago (-11)
RU_MOBILE = "+79161234567"  # Russian mobile: Europe/Bucharest (+2) to Asia/Anadyr (+12)
FREEPHONE = "+80012345678"  # international freephone: Etc/Unknown

TOML = """
[quiet_hours]
default_timezone = "Europe/Paris"
"""


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ny(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A New York wall time as an aware UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)


def make_settings(tmp_path: Path, text: str = TOML) -> Settings:
    path = tmp_path / "notifyctl.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ={})


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "t.db")
    yield connection
    connection.close()


@pytest.fixture
def policy(tmp_path: Path, conn: sqlite3.Connection) -> Policy:
    return Policy(make_settings(tmp_path), conn)


@dataclass
class Case:
    channel: str
    category: str
    address: str
    now: datetime
    expected: tuple[str, str | None, datetime | None]  # action, reason, until
    user_id: str | None = "u1"
    timezone: str | None = None
    phone: str | None = None
    prefs: list[tuple[str, str, bool]] = field(default_factory=list)  # channel, category, enabled for u1
    suppressions: list[tuple[str, str, str]] = field(default_factory=list)  # channel, address, reason


NOON = ny(2026, 1, 15, 12, 0)
LATE = ny(2026, 1, 15, 22, 30)
THREE_AM = ny(2026, 1, 15, 3, 0)
NEXT_8AM = ny(2026, 1, 16, 8, 0)
SEND = ("send", None, None)

DECISIONS = [
    # preferences
    pytest.param(
        Case(
            "email",
            "transactional",
            "bob@example.com",
            NOON,
            ("skip", "preference_off", None),
            prefs=[("email", "transactional", False)],
        ),
        id="preference-off-skips",
    ),
    pytest.param(
        Case(
            "email",
            "marketing",
            "bob@example.com",
            NOON,
            ("skip", "preference_off", None),
            prefs=[("email", "*", False)],
        ),
        id="wildcard-preference-off-skips",
    ),
    pytest.param(
        Case(
            "email",
            "marketing",
            "bob@example.com",
            NOON,
            SEND,
            prefs=[("email", "*", False), ("email", "marketing", True)],
        ),
        id="specific-preference-beats-wildcard",
    ),
    pytest.param(
        Case("email", "transactional", "bob@example.com", NOON, SEND, prefs=[("sms", "transactional", False)]),
        id="preference-on-another-channel-does-not-apply",
    ),
    # suppressions
    pytest.param(
        Case(
            "email",
            "transactional",
            "bob@example.com",
            NOON,
            ("skip", "suppressed:bounce", None),
            prefs=[("email", "transactional", True)],
            suppressions=[("email", "Bob@Example.com", "bounce")],
        ),
        id="suppressed-skips-even-when-opted-in",
    ),
    pytest.param(
        Case(
            "email",
            "security",
            "bob@example.com",
            NOON,
            ("skip", "suppressed:unsubscribe", None),
            suppressions=[("email", "bob@example.com", "unsubscribe")],
        ),
        id="suppressed-skips-even-when-critical",
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            NOON,
            ("skip", "suppressed:stop", None),
            user_id=None,
            suppressions=[("sms", "+1 212-555-1234", "stop")],
        ),
        id="suppressed-inline-contact-skips",
    ),
    pytest.param(
        Case("email", "transactional", "bob@example.com", NOON, SEND, suppressions=[("sms", NY_PHONE, "stop")]),
        id="suppression-on-another-channel-does-not-apply",
    ),
    # critical categories
    pytest.param(
        Case("email", "security", "bob@example.com", NOON, SEND, prefs=[("email", "*", False)]),
        id="critical-bypasses-preference-off",
    ),
    pytest.param(
        Case("sms", "security", NY_PHONE, THREE_AM, SEND, timezone="America/New_York"),
        id="critical-bypasses-consent-and-quiet-hours",
    ),
    # consent
    pytest.param(
        Case("sms", "marketing", NY_PHONE, NOON, ("skip", "no_consent", None)),
        id="marketing-sms-without-opt-in-skips",
    ),
    pytest.param(
        Case("sms", "marketing", NY_PHONE, NOON, ("skip", "no_consent", None), prefs=[("email", "marketing", True)]),
        id="marketing-sms-opt-in-on-email-only-skips",
    ),
    pytest.param(
        Case("sms", "marketing", NY_PHONE, NOON, SEND, prefs=[("sms", "marketing", True)]),
        id="marketing-sms-with-opt-in-inside-hours-sends",
    ),
    pytest.param(
        Case("sms", "marketing", NY_PHONE, NOON, SEND, prefs=[("sms", "*", True)]),
        id="marketing-sms-with-wildcard-opt-in-sends",
    ),
    pytest.param(
        Case("email", "marketing", "bob@example.com", THREE_AM, SEND),
        id="marketing-email-needs-no-opt-in-nor-quiet-hours",
    ),
    # quiet hours
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            LATE,
            ("defer", QUIET_HOURS, utc(2026, 1, 16, 13, 0)),
            timezone="America/New_York",
            prefs=[("sms", "marketing", True)],
        ),
        id="22:30-new-york-defers-to-08:00-next-day",
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            ny(2026, 1, 15, 7, 59),
            ("defer", QUIET_HOURS, ny(2026, 1, 15, 8, 0)),
            timezone="America/New_York",
            prefs=[("sms", "marketing", True)],
        ),
        id="07:59-new-york-defers-to-08:00-same-day",
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            ny(2026, 1, 15, 20, 59),
            SEND,
            timezone="America/New_York",
            prefs=[("sms", "marketing", True)],
        ),
        id="20:59-new-york-sends",
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            ny(2026, 1, 15, 21, 0),
            ("defer", QUIET_HOURS, NEXT_8AM),
            timezone="America/New_York",
            prefs=[("sms", "marketing", True)],
        ),
        id="21:00-new-york-defers",
    ),
    pytest.param(
        Case("sms", "marketing", NY_PHONE, LATE, ("defer", QUIET_HOURS, NEXT_8AM), prefs=[("sms", "marketing", True)]),
        id="zone-from-212-number-without-profile-zone",
    ),
    pytest.param(
        Case("sms", "marketing", NY_PHONE, LATE, ("defer", QUIET_HOURS, NEXT_8AM), user_id=None),
        id="inline-contact-has-no-consent-check-but-quiet-hours",
    ),
    pytest.param(
        Case("sms", "marketing", NY_PHONE, NOON, SEND, user_id=None),
        id="inline-contact-inside-hours-sends",
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            LATE,
            ("defer", QUIET_HOURS, utc(2026, 1, 16, 8, 0)),
            timezone="Europe/London",
            prefs=[("sms", "marketing", True)],
        ),
        id="profile-zone-wins-over-phone",  # 03:30 in London: opens 08:00 London
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            LATE,
            ("defer", QUIET_HOURS, NEXT_8AM),
            timezone="Mars/Olympus_Mons",
            prefs=[("sms", "marketing", True)],
        ),
        id="unknown-profile-zone-falls-back-to-phone",
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            FREEPHONE,
            utc(2026, 1, 15, 6, 0),
            ("defer", QUIET_HOURS, utc(2026, 1, 15, 7, 0)),
            prefs=[("sms", "marketing", True)],
        ),
        id="unplaceable-number-uses-default-zone",  # 07:00 in Paris
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NL_PHONE,
            utc(2026, 1, 15, 11, 45),
            ("defer", QUIET_HOURS, utc(2026, 1, 15, 12, 0)),
            prefs=[("sms", "marketing", True)],
        ),
        id="709-number-waits-for-halifax-though-st-johns-is-open",  # 07:45 Halifax, 08:15 St John's
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NL_PHONE,
            utc(2026, 1, 16, 0, 45),
            ("defer", QUIET_HOURS, utc(2026, 1, 16, 12, 0)),
            prefs=[("sms", "marketing", True)],
        ),
        id="709-number-stops-when-st-johns-closes",  # 20:45 Halifax, 21:15 St John's
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            TOLL_FREE,
            utc(2026, 1, 15, 18, 0),
            ("defer", QUIET_HOURS, utc(2026, 1, 15, 22, 0)),
            prefs=[("sms", "marketing", True)],
        ),
        id="toll-free-number-waits-for-guam",  # 13:00 in New York but 04:00 in Guam
    ),
    pytest.param(
        Case("sms", "marketing", TOLL_FREE, utc(2026, 1, 15, 23, 0), SEND, prefs=[("sms", "marketing", True)]),
        id="toll-free-number-inside-the-common-window-sends",  # 09:00 Guam, 12:00 Pago Pago
    ),
    # DST in New York: 2026-03-08 02:00 EST → 03:00 EDT; 2026-11-01 02:00 EDT → 01:00 EST
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            utc(2026, 3, 8, 3, 0),
            ("defer", QUIET_HOURS, utc(2026, 3, 8, 12, 0)),
            prefs=[("sms", "marketing", True)],
        ),
        id="dst-start-opens-at-08:00-edt",
    ),
    pytest.param(
        Case("sms", "marketing", NY_PHONE, utc(2026, 3, 8, 12, 30), SEND, prefs=[("sms", "marketing", True)]),
        id="dst-start-08:30-edt-sends",
    ),
    pytest.param(
        Case("sms", "marketing", NY_PHONE, utc(2026, 3, 8, 1, 30), SEND, prefs=[("sms", "marketing", True)]),
        id="dst-start-eve-20:30-est-sends",
    ),
    pytest.param(
        Case(
            "sms",
            "marketing",
            NY_PHONE,
            utc(2026, 11, 1, 3, 0),
            ("defer", QUIET_HOURS, utc(2026, 11, 1, 13, 0)),
            prefs=[("sms", "marketing", True)],
        ),
        id="dst-end-opens-at-08:00-est",
    ),
    # categories without quiet hours
    pytest.param(
        Case("email", "transactional", "bob@example.com", THREE_AM, SEND, timezone="America/New_York"),
        id="transactional-email-at-03:00-sends",
    ),
    pytest.param(
        Case("sms", "transactional", NY_PHONE, THREE_AM, SEND, timezone="America/New_York"),
        id="transactional-sms-at-03:00-sends",
    ),
    pytest.param(
        Case("push", "unknown-category", "token-1", THREE_AM, SEND),
        id="unknown-category-has-no-rules",
    ),
]


@pytest.mark.parametrize("case", DECISIONS)
def test_decide(case: Case, policy: Policy, conn: sqlite3.Connection) -> None:
    for channel, category, enabled in case.prefs:
        set_preference(conn, "u1", channel, category, enabled)
    for channel, address, reason in case.suppressions:
        add_suppression(conn, channel, address, reason)

    decision = policy.decide(
        channel=case.channel,
        category=case.category,
        address=case.address,
        user_id=case.user_id,
        timezone=case.timezone,
        phone=case.phone,
        now=case.now,
    )

    assert (decision.action, decision.reason, decision.until) == case.expected


def test_clock_is_used_when_now_is_not_given(tmp_path: Path, conn: sqlite3.Connection) -> None:
    moments = iter([LATE, NOON])
    policy = Policy(make_settings(tmp_path), conn, clock=lambda: next(moments))

    first = policy.decide(channel="sms", category="marketing", address=NY_PHONE, user_id=None)
    second = policy.decide(channel="sms", category="marketing", address=NY_PHONE, user_id=None)

    assert (first.action, first.until) == ("defer", NEXT_8AM)
    assert second.action == "send"


def test_opt_out_takes_effect_on_the_next_decision(policy: Policy, conn: sqlite3.Connection) -> None:
    def decide() -> Decision:
        return policy.decide(channel="sms", category="marketing", address=NY_PHONE, user_id="u1", now=NOON)

    set_preference(conn, "u1", "sms", "marketing", True)
    assert decide().action == "send"

    add_suppression(conn, "sms", NY_PHONE, "stop")
    assert decide().reason == "suppressed:stop"

    conn.execute("DELETE FROM suppressions")
    set_preference(conn, "u1", "sms", "marketing", False)
    assert decide().reason == "preference_off"


@pytest.mark.parametrize(
    ("category", "user_id", "statements"),
    [
        # suppression, hashed suppression (erased users), preference
        pytest.param("marketing", "u1", 3, id="user-suppression-and-preference"),
        pytest.param("marketing", None, 2, id="inline-contact-suppression-only"),
        pytest.param("security", "u1", 2, id="critical-suppression-only"),
    ],
)
def test_decide_does_only_point_lookups(
    policy: Policy, conn: sqlite3.Connection, category: str, user_id: str | None, statements: int
) -> None:
    set_preference(conn, "u1", "sms", "marketing", True)
    policy.decide(channel="sms", category=category, address=NY_PHONE, user_id=user_id, now=LATE)  # warm caches
    executed: list[str] = []
    conn.set_trace_callback(executed.append)
    try:
        for _ in range(3):
            policy.decide(channel="sms", category=category, address=NY_PHONE, user_id=user_id, now=LATE)
    finally:
        conn.set_trace_callback(None)

    assert len(executed) == 3 * statements
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in executed)


def test_no_common_window_defers_to_the_westernmost_zone_then_sends(tmp_path: Path, conn: sqlite3.Connection) -> None:
    # A four-hour window (08:00–12:00) cannot hold from Bucharest (+2) to Anadyr (+12) at once.
    policy = Policy(make_settings(tmp_path, '[quiet_hours]\nstart = "12:00:00"\nend = "08:00:00"\n'), conn)

    def decide(now: datetime) -> Decision:
        return policy.decide(channel="sms", category="marketing", address=RU_MOBILE, user_id=None, now=now)

    deferred = decide(utc(2026, 1, 15, 4, 0))  # 06:00 in Bucharest, the westernmost of the number's zones
    assert (deferred.action, deferred.reason, deferred.until) == ("defer", NO_COMMON_WINDOW, utc(2026, 1, 15, 6, 0))

    # Re-checked when it falls due, it goes out instead of chasing the next zone's opening.
    assert decide(utc(2026, 1, 15, 6, 0)).action == "send"


def test_unknown_default_timezone_is_a_config_error(tmp_path: Path, conn: sqlite3.Connection) -> None:
    settings = make_settings(tmp_path, '[quiet_hours]\ndefault_timezone = "Nowhere/Special"\n')
    with pytest.raises(ConfigError, match=r"quiet_hours\.default_timezone"):
        Policy(settings, conn)


# --- recipient_zones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "phone", "expected"),
    [
        pytest.param("Asia/Tokyo", NY_PHONE, ["Asia/Tokyo"], id="profile-zone-first"),
        pytest.param("Not/AZone", NY_PHONE, ["America/New_York"], id="unknown-profile-zone-ignored"),
        pytest.param("", NY_PHONE, ["America/New_York"], id="empty-profile-zone-ignored"),
        pytest.param(None, NL_PHONE, ["America/Halifax", "America/St_Johns"], id="number-with-two-zones"),
        pytest.param(None, FREEPHONE, ["Europe/Paris"], id="etc-unknown-ignored"),
        pytest.param(None, "not a number", ["Europe/Paris"], id="unparseable-number"),
        pytest.param(None, None, ["Europe/Paris"], id="nothing-known"),
    ],
)
def test_recipient_zones(timezone: str | None, phone: str | None, expected: list[str]) -> None:
    assert recipient_zones(timezone, phone, "Europe/Paris") == expected


def test_recipient_zones_of_a_toll_free_number_span_the_pacific() -> None:
    zones = recipient_zones(None, TOLL_FREE, "UTC")
    assert {"America/New_York", "America/Los_Angeles", "Pacific/Guam", "Pacific/Pago_Pago"} <= set(zones)
    assert "Etc/Unknown" not in zones


def test_recipient_zones_rejects_an_unknown_default() -> None:
    with pytest.raises(ConfigError):
        recipient_zones(None, None, "Nowhere/Special")


# --- next_allowed ------------------------------------------------------------------------------

DEFAULT = (time(21, 0), time(8, 0))


@pytest.mark.parametrize(
    ("now", "zones", "window", "expected"),
    [
        pytest.param(NOON, ["America/New_York"], DEFAULT, None, id="inside"),
        pytest.param(LATE, ["America/New_York"], DEFAULT, NEXT_8AM, id="after-start"),
        pytest.param(ny(2026, 1, 15, 8, 0), ["America/New_York"], DEFAULT, None, id="opening-instant-is-open"),
        pytest.param(
            ny(2026, 1, 15, 1, 0),
            ["America/New_York"],
            (time(2), time(10)),
            None,
            id="window-wrapping-midnight-open-at-01:00",
        ),
        pytest.param(
            ny(2026, 1, 15, 3, 0),
            ["America/New_York"],
            (time(2), time(10)),
            ny(2026, 1, 15, 10, 0),
            id="window-wrapping-midnight-closed-at-03:00",
        ),
        pytest.param(LATE, ["America/New_York"], (time(8), time(8)), None, id="start-equals-end-means-no-quiet-time"),
        pytest.param(
            utc(2026, 3, 8, 6, 0),
            ["America/New_York"],
            (time(21), time(2, 30)),
            utc(2026, 3, 8, 7, 0),
            id="opening-in-the-dst-gap-opens-at-the-transition",
        ),
        pytest.param(
            utc(2026, 11, 1, 5, 45),
            ["America/New_York"],
            (time(1, 30), time(8)),
            utc(2026, 11, 1, 6, 0),
            id="repeated-hour-reopens-when-clocks-go-back",  # 01:45 EDT closed, then 01:00 EST
        ),
        pytest.param(
            utc(2026, 11, 1, 6, 20),
            ["America/New_York"],
            (time(1, 15), time(1, 30)),
            utc(2026, 11, 1, 6, 30),
            id="repeated-hour-opens-again-at-the-second-occurrence",  # 01:20 EST closed until 01:30 EST
        ),
        pytest.param(
            utc(2026, 3, 29, 6, 30),
            ["Europe/London", "America/New_York"],
            DEFAULT,
            utc(2026, 3, 29, 12, 0),
            id="two-zones-different-dst-dates",  # London on BST from 29 March, New York since 8 March
        ),
        pytest.param(
            utc(2026, 1, 15, 2, 0),
            ["Asia/Kathmandu"],
            DEFAULT,
            utc(2026, 1, 15, 2, 15),
            id="quarter-hour-offset",
        ),
        pytest.param(
            utc(2026, 1, 15, 12, 0),
            ["UTC", "Asia/Shanghai", "America/Los_Angeles"],
            DEFAULT,
            utc(2026, 1, 15, 16, 0),
            id="no-common-window-defers-to-westernmost-opening",
        ),
        pytest.param(
            utc(2026, 1, 15, 16, 0),
            ["UTC", "Asia/Shanghai", "America/Los_Angeles"],
            DEFAULT,
            None,
            id="no-common-window-westernmost-open-is-allowed",
        ),
        pytest.param(
            utc(2026, 1, 15, 12, 0),
            ["America/Los_Angeles", "UTC"],
            DEFAULT,
            utc(2026, 1, 15, 16, 0),
            id="two-far-zones-still-share-an-hour",  # 08:00 LA is 16:00 UTC: open until 21:00 UTC
        ),
    ],
)
def test_next_allowed(now: datetime, zones: list[str], window: tuple[time, time], expected: datetime | None) -> None:
    start, end = window
    assert next_allowed(now, zones, start, end) == expected


def test_next_allowed_returns_utc() -> None:
    until = next_allowed(LATE.astimezone(ZoneInfo("Asia/Tokyo")), ["America/New_York"], *DEFAULT)
    assert until == NEXT_8AM
    assert until is not None and until.utcoffset() == timedelta(0)


def test_next_allowed_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed(datetime(2026, 1, 15, 12, 0), ["UTC"], *DEFAULT)


ZONE_POOL = [
    "UTC",
    "America/New_York",
    "America/St_Johns",
    "America/Los_Angeles",
    "Europe/London",
    "Australia/Lord_Howe",  # half-hour DST shift
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "America/Santiago",  # transitions at midnight
]
QUARTERS = st.builds(lambda q: time(q // 4, q % 4 * 15), st.integers(0, 95))


def _open_everywhere(moment: datetime, zones: list[str], start: time, end: time) -> bool:
    for name in zones:
        local = moment.astimezone(ZoneInfo(name)).time()
        inside = end <= local < start if end < start else (local >= end or local < start)
        if not inside:
            return False
    return True


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    minute=st.integers(0, 365 * 24 * 60),
    zones=st.lists(st.sampled_from(ZONE_POOL), min_size=1, max_size=3, unique=True),
    start=QUARTERS,
    end=QUARTERS,
)
def test_next_allowed_matches_a_minute_by_minute_scan(minute: int, zones: list[str], start: time, end: time) -> None:
    now = utc(2026, 1, 1) + timedelta(minutes=minute)
    result = next_allowed(now, zones, start, end)
    if start == end:
        assert result is None
        return
    scan = (now + timedelta(minutes=m) for m in range(48 * 60 + 1))
    first_open = next((m for m in scan if _open_everywhere(m, zones, start, end)), None)
    if first_open is not None:
        assert result == (None if first_open == now else first_open)
    else:
        # No common window: the result is an instant (or now) where the westernmost zone is open.
        moment = now if result is None else result
        offsets = {z: now.astimezone(ZoneInfo(z)).utcoffset() for z in zones}
        westernmost = min(zones, key=lambda z: (offsets[z], z))
        assert _open_everywhere(moment, [westernmost], start, end)
        assert result is None or now < result <= now + timedelta(hours=48)
