"""The policy stage: for one delivery, send / skip(reason) / defer(until).

Rules, first match wins:

1. suppressed address on the channel        → skip("suppressed:<reason>"), never bypassed
2. critical category                         → send (bypasses 3–5)
3. preference (user, channel, category) off  → skip("preference_off"); a '*' category row is a wildcard
4. channel needs explicit opt-in, none given → skip("no_consent")
5. quiet hours (category and channel opt in) → defer(until, "quiet_hours") outside the allowed window
6. otherwise                                 → send

Contacts without a user id (inline audience rows) have no preferences, so only 1, 2, 5 and 6 apply.

`decide` runs twice per delivery (planning, and right before the provider call, so an opt-out
lands before the very next message), thousands of times a second. The directory answers for a
whole page of deliveries are read in a few queries (`Policy.view`); each decision then reads one
counter that every change to suppressions or preferences bumps (triggers), and uses the page's
answers only while the counter is unchanged, else looks the delivery up on its own. An opt-out
committed before a decision is therefore always seen by it.

Everything derived from time zones is cached: ZoneInfo objects, the zones of a phone number,
and per UTC day the instants at which a set of zones is jointly open.

Quiet hours. Sends are not allowed from `start` until `end` in the recipient's local time, so the
allowed window is [end, start), wrapping midnight when end > start; start == end means no quiet
time at all. A recipient's zones are their profile time zone, else every zone phonenumbers gives
for their number, else the configured default. The window must be open in all of them at once.
The answer is computed on real instants (not on wall clocks), so DST gaps and repeated hours are
handled: a window whose opening wall time falls in a spring-forward gap opens at the transition.

When no instant in the next 48 hours is open in every zone (zones too far apart for the window),
the delivery goes out when the window is open in the zone where it opens last: the westernmost
zone (smallest UTC offset now), where a given local morning arrives last. That rule does not
depend on `now`, so a delivery deferred to that instant is sent when it is re-checked, instead
of chasing each zone's opening in turn. Such a deferral's reason is "quiet_hours:no_common_window".
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from notifyctl.categories import CategoryRule
from notifyctl.errors import ConfigError
from notifyctl.models import Decision
from notifyctl.security.secret import InstallationSecret
from notifyctl.settings import Settings
from notifyctl.store import directory
from notifyctl.store.erasure import hashed_suppressed, hashed_suppressed_among
from notifyctl.store.secrets import installation_secret

Clock = Callable[[], datetime]

QUIET_HOURS = "quiet_hours"
NO_COMMON_WINDOW = "quiet_hours:no_common_window"
HORIZON = timedelta(hours=48)

_UNKNOWN_ZONE = "Etc/Unknown"
# Each cached day covers [day, day + 3): the 48 h horizon from any instant of that day, plus
# room for the westernmost zone's next opening.
_SPAN = timedelta(days=3)
_SAMPLE = timedelta(hours=1)  # no zone has two offset changes within an hour


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- time zones -------------------------------------------------------------------------------


@lru_cache(maxsize=2048)
def _zoneinfo(name: str) -> ZoneInfo | None:
    """The zone, or None for a name tzdata does not know (profile fields can hold anything)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _zone(name: str) -> ZoneInfo:
    zone = _zoneinfo(name)
    if zone is None:
        raise ValueError(f"unknown time zone '{name}'")
    return zone


@lru_cache(maxsize=65536)
def _phone_zones(phone: str) -> tuple[str, ...]:
    """Known time zones of an E.164 number; empty when it cannot be parsed or placed."""
    # Imported here (cached per number anyway): phonenumbers costs ~50 ms of start-up.
    import phonenumbers
    from phonenumbers.timezone import time_zones_for_number

    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return ()
    return tuple(z for z in time_zones_for_number(number) if z != _UNKNOWN_ZONE and _zoneinfo(z) is not None)


@lru_cache(maxsize=65536)
def _recipient_zones(timezone: str | None, phone: str | None, default: str) -> tuple[str, ...]:
    if timezone and _zoneinfo(timezone) is not None:
        return (timezone,)
    if phone:
        zones = _phone_zones(phone)
        if zones:
            return zones
    if _zoneinfo(default) is None:
        raise ConfigError(f"unknown time zone '{default}'", key="quiet_hours.default_timezone")
    return (default,)


def recipient_zones(timezone: str | None, phone: str | None, default: str) -> list[str]:
    """The zones whose local time counts: profile zone, else the phone number's zones, else default.

    An unknown profile zone is ignored rather than trusted; an unknown default is a ConfigError.
    """
    return list(_recipient_zones(timezone, phone, default))


# --- quiet-hours windows ----------------------------------------------------------------------


def _is_open(moment: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    """Whether the allowed window [end, start) holds at this instant in this zone."""
    local = moment.astimezone(zone).time()
    if end < start:
        return end <= local < start
    return local >= end or local < start


def _offset_seconds(epoch_s: int, zone: ZoneInfo) -> float:
    offset = datetime.fromtimestamp(epoch_s, UTC).astimezone(zone).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def _transitions(zone: ZoneInfo, first: datetime, last: datetime) -> Iterable[datetime]:
    """Instants in [first, last) at which the zone's UTC offset changes (to the second)."""
    lo_s = int(first.timestamp())
    end_s = int(last.timestamp())
    step_s = int(_SAMPLE.total_seconds())
    before = _offset_seconds(lo_s, zone)
    while lo_s < end_s:
        hi_s = lo_s + step_s
        after = _offset_seconds(hi_s, zone)
        if after != before:
            a, b = lo_s, hi_s
            while b - a > 1:
                mid = (a + b) // 2
                if _offset_seconds(mid, zone) == before:
                    a = mid
                else:
                    b = mid
            yield datetime.fromtimestamp(b, UTC)
        lo_s, before = hi_s, after


@lru_cache(maxsize=4096)
def _change_points(name: str, start: time, end: time, day: date) -> tuple[datetime, ...]:
    """Instants in [day, day + span) at which the window may open or close in this zone.

    Those are the instants whose wall time is `start` or `end` (both occurrences in a repeated
    hour, none in a gap) and the offset transitions, where the wall clock jumps.
    """
    zone = _zone(name)
    first = datetime.combine(day, time(), UTC)
    last = first + _SPAN
    points: set[datetime] = set(_transitions(zone, first, last))
    for offset_days in range(-2, _SPAN.days + 2):
        local_day = day + timedelta(days=offset_days)
        for boundary in (start, end):
            wall = datetime.combine(local_day, boundary)
            for fold in (0, 1):
                moment = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
                if moment.astimezone(zone).replace(tzinfo=None) == wall:
                    points.add(moment)
    return tuple(sorted(p for p in points if first <= p < last))


class _Windows(NamedTuple):
    """UTC intervals [starts[i], ends[i]) during which every zone is open."""

    starts: tuple[datetime, ...]
    ends: tuple[datetime, ...]


@lru_cache(maxsize=4096)
def _windows(zones: tuple[str, ...], start: time, end: time, day: date) -> _Windows:
    first = datetime.combine(day, time(), UTC)
    last = first + _SPAN
    infos = [_zone(z) for z in zones]
    points = sorted({first}.union(*(_change_points(z, start, end, day) for z in zones)))
    starts: list[datetime] = []
    ends: list[datetime] = []
    # The open/closed state of every zone is constant between consecutive change points.
    for i, point in enumerate(points):
        segment_end = points[i + 1] if i + 1 < len(points) else last
        if not all(_is_open(point, info, start, end) for info in infos):
            continue
        if ends and ends[-1] == point:
            ends[-1] = segment_end
        else:
            starts.append(point)
            ends.append(segment_end)
    return _Windows(tuple(starts), tuple(ends))


def _westernmost(zones: tuple[str, ...], now: datetime) -> str:
    def key(name: str) -> tuple[float, str]:
        offset = now.astimezone(_zone(name)).utcoffset()
        return (offset.total_seconds() if offset is not None else 0.0, name)

    return min(zones, key=key)


def _opening(now: datetime, zones: tuple[str, ...], start: time, end: time) -> tuple[datetime, bool] | None:
    """None when allowed now; else (when, whether the window is then open in every zone)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if start == end or not zones:
        return None
    now = now.astimezone(UTC)
    windows = _windows(zones, start, end, now.date())
    i = bisect_right(windows.starts, now) - 1
    if i >= 0 and now < windows.ends[i]:
        return None
    if i + 1 < len(windows.starts) and windows.starts[i + 1] <= now + HORIZON:
        return windows.starts[i + 1], True
    if len(zones) == 1:
        # An allowed window of at least a second always recurs within a day and a DST hour.
        raise AssertionError(f"no opening of {zones[0]} within {HORIZON}")
    anchor = _opening(now, (_westernmost(zones, now),), start, end)
    return None if anchor is None else (anchor[0], False)


def next_allowed(now: datetime, zones: list[str], start: time, end: time) -> datetime | None:
    """The earliest UTC instant at which [end, start) is open in every zone; None when it is now.

    Without such an instant in the next 48 h, the westernmost zone alone decides (module docstring).
    """
    opening = _opening(now, tuple(zones), start, end)
    return None if opening is None else opening[0]


# --- the stage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyView:
    """What the directory said about a page of deliveries on one channel, at `version`."""

    version: int
    channel: str
    addresses: frozenset[str]
    user_ids: frozenset[str]
    suppressed: dict[str, str]  # address → reason (plain or hashed list)
    preferences: dict[tuple[str, str], bool]  # (user_id, category or '*') → enabled

    def covers(self, channel: str, address: str, user_id: str | None) -> bool:
        return channel == self.channel and address in self.addresses and (user_id is None or user_id in self.user_ids)


_SEND = Decision(action="send")


def _quiet_deferral(
    settings: Settings, channel: str, address: str, timezone: str | None, phone: str | None, now: datetime
) -> Decision | None:
    quiet = settings.quiet_hours
    zones = _recipient_zones(timezone or None, phone or (address if channel == "sms" else None), quiet.default_timezone)
    opening = _opening(now, zones, quiet.start, quiet.end)
    if opening is None:
        return None
    until, everywhere = opening
    return Decision.defer(until, QUIET_HOURS if everywhere else NO_COMMON_WINDOW)


def quiet_hours(
    settings: Settings,
    *,
    channel: str,
    category: str,
    address: str,
    timezone: str | None,
    phone: str | None,
    now: datetime,
) -> Decision | None:
    """The quiet-hours rule alone (rule 5, after a critical category's bypass): the deferral, or None.
    What a Redis worker checks right before its claim; opt-outs reach it as revocations."""
    rule = settings.category(category)
    if rule.critical or not rule.quiet_hours or channel not in settings.quiet_hours.channels:
        return None
    return _quiet_deferral(settings, channel, address, timezone, phone, now)


class Policy:
    """Decides send / skip / defer for one delivery; holds no state besides caches of settings."""

    def __init__(
        self,
        settings: Settings,
        conn: sqlite3.Connection,
        clock: Clock | None = None,
        secret: InstallationSecret | None = None,
    ) -> None:
        """`secret`: the installation's, when the caller has it already (read from `conn` otherwise)."""
        self._settings = settings
        self._conn = conn
        # Erased addresses are matched under every key that ever made a hash (usually one).
        self._erasure_keys = (secret or installation_secret(conn, settings)).erasure_keys
        self._clock = clock or _utc_now
        quiet = settings.quiet_hours
        if _zoneinfo(quiet.default_timezone) is None:
            raise ConfigError(f"unknown time zone '{quiet.default_timezone}'", key="quiet_hours.default_timezone")
        self._quiet_channels = frozenset(quiet.channels)
        self._rules: dict[str, CategoryRule] = {}

    def _rule(self, category: str) -> CategoryRule:
        rule = self._rules.get(category)
        if rule is None:
            rule = self._rules[category] = self._settings.category(category)
        return rule

    def view(self, channel: str, addresses: Sequence[str], user_ids: Sequence[str]) -> PolicyView:
        """The directory's answers for a page of deliveries on one channel, in a few queries. The
        version is read first: a change committed while the page is read makes the view stale."""
        version = directory.directory_version(self._conn)
        unique = list(dict.fromkeys(addresses))
        suppressed = hashed_suppressed_among(self._conn, channel, unique, self._erasure_keys)
        suppressed.update(directory.suppressed_among(self._conn, channel, unique))  # the plain list wins
        return PolicyView(
            version=version,
            channel=channel,
            addresses=frozenset(unique),
            user_ids=frozenset(user_ids),
            suppressed=suppressed,
            preferences=directory.preferences_among(self._conn, user_ids, channel),
        )

    def _suppressed(self, channel: str, address: str) -> str | None:
        suppressed = directory.is_suppressed(self._conn, channel, address)
        if suppressed is None:
            # Erased users stay suppressed, as keyed hashes of their addresses.
            suppressed = hashed_suppressed(self._conn, channel, address, self._erasure_keys)
        return suppressed

    def decide(
        self,
        *,
        channel: str,
        category: str,
        address: str,
        user_id: str | None,
        timezone: str | None = None,
        phone: str | None = None,
        now: datetime | None = None,
        view: PolicyView | None = None,
        verify: bool = True,
    ) -> Decision:
        """The decision for one delivery; `address` must already be normalised for the channel.

        `timezone` and `phone` come from the user's profile or the audience row; on SMS the
        address is the phone number when `phone` is not given. `view`: the page's answers, used
        when they cover this delivery and the directory has not changed since they were read;
        `verify=False` skips that last check, for a caller that checks `view.version` itself later
        (the engine, at the intent's commit: `Engine._still_allowed`).
        """
        if (
            view is not None
            and view.covers(channel, address, user_id)
            and (not verify or view.version == directory.directory_version(self._conn))
        ):
            suppressed = view.suppressed.get(address)
            preferences = view.preferences
        else:
            suppressed = self._suppressed(channel, address)
            preferences = None
        if suppressed is not None:
            return Decision.skip(f"suppressed:{suppressed}")
        rule = self._rule(category)
        if rule.critical:
            return _SEND
        if user_id is not None:
            if preferences is None:
                opted = directory.preference(self._conn, user_id, channel, category)
            else:
                opted = preferences.get((user_id, category))
                if opted is None:
                    opted = preferences.get((user_id, "*"))
            if opted is False:
                return Decision.skip("preference_off")
            if opted is not True and channel in rule.opt_in_required:
                return Decision.skip("no_consent")
        if rule.quiet_hours and channel in self._quiet_channels:
            deferral = _quiet_deferral(self._settings, channel, address, timezone, phone, now or self._clock())
            if deferral is not None:
                return deferral
        return _SEND
