"""Solar schedules: ``EVENT LATITUDE LONGITUDE [OFFSET]``, e.g. ``sunset 52.3676 4.9041 -15m``.

Sunrise and sunset are the sun's upper limb on a sea-level horizon with
standard refraction: the centre 50 arcminutes below the horizon (16 for the
radius, 34 for refraction). Dawn and dusk are the centre 6 (civil), 12
(nautical) or 18 (astronomical) degrees below it, without refraction. Noon is
the sun's transit. Times come from astral's NOAA algorithm, which is within a
minute at the latitudes where people live.

Each local calendar day in the schedule's zone has at most one slot: that
day's event plus the offset. Days without the event (polar night, midnight
sun) have no slot.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from astral import Observer, SunDirection
from astral.sun import noon, time_at_elevation

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics.base import Schedule
from z4j_scheduler.semantics.durations import parse_signed_duration
from z4j_scheduler.semantics.instants import require_aware

_HORIZON = -50 / 60
_RISING = SunDirection.RISING
_SETTING = SunDirection.SETTING
EVENTS: dict[str, tuple[float, SunDirection] | None] = {
    "dawn_astronomical": (-18.0, _RISING),
    "dawn_nautical": (-12.0, _RISING),
    "dawn": (-6.0, _RISING),
    "sunrise": (_HORIZON, _RISING),
    "noon": None,
    "sunset": (_HORIZON, _SETTING),
    "dusk": (-6.0, _SETTING),
    "dusk_nautical": (-12.0, _SETTING),
    "dusk_astronomical": (-18.0, _SETTING),
}
# The sun rises once a year even at the poles, so a year and a margin for the
# offset and leap days covers every event that happens at all.
SEARCH_DAYS = 400
_MAX_OFFSET = timedelta(days=1)
_ONE_DAY = timedelta(days=1)
_FIRST_DAY = date.min + timedelta(days=2)
_LAST_DAY = date.max - timedelta(days=2)


class SolarSchedule(Schedule):
    """One slot per local day at a solar event, shifted by ``offset``."""

    kind = "solar"

    def __init__(self, expression: str, zone: ZoneInfo) -> None:
        self.expression = expression
        self.zone = zone
        self.event, self.latitude, self.longitude, self.offset = _parse(expression)

    def next_after(self, t: datetime) -> datetime | None:
        after = require_aware(t, "t")
        first_day = self._event_day(after)
        for days in range(SEARCH_DAYS):
            slot = self._slot_on(first_day, days)
            if slot is not None and slot > after:
                return slot
        return None

    def previous_before(self, t: datetime) -> datetime | None:
        before = require_aware(t, "t")
        last_day = self._event_day(before)
        for days in range(SEARCH_DAYS):
            slot = self._slot_on(last_day, -days)
            if slot is not None and slot < before:
                return slot
        return None

    def _event_day(self, slot: datetime) -> date:
        """Return the local date whose event, plus the offset, is near ``slot``."""
        try:
            return (slot - self.offset).astimezone(self.zone).date()
        except OverflowError:
            # Within a day of datetime's range; the days beyond it have no slots anyway.
            return slot.date()

    def _slot_on(self, first_day: date, days: int) -> datetime | None:
        """Return the slot of the local date ``days`` after ``first_day``, or None."""
        ordinal = first_day.toordinal() + days
        if not _FIRST_DAY.toordinal() <= ordinal <= _LAST_DAY.toordinal():
            return None
        day = date.fromordinal(ordinal)
        event = event_on(self.event, self.latitude, self.longitude, self.zone, day)
        return None if event is None else event + self.offset


@functools.lru_cache(maxsize=8192)
def event_on(
    event: str, latitude: float, longitude: float, zone: ZoneInfo, day: date
) -> datetime | None:
    """Return the UTC instant of ``event`` on local date ``day`` in ``zone``, or None.

    astral computes for UTC dates, so the event of local ``day`` may come from
    the UTC date before or after it.
    """
    observer = Observer(latitude, longitude, 0.0)
    for utc_day in (day, day - _ONE_DAY, day + _ONE_DAY):
        instant = _event_on_utc_date(event, observer, utc_day)
        if instant is not None and instant.astimezone(zone).date() == day:
            return instant
    return None


def _round_to_second(instant: datetime) -> datetime:
    """Round to the nearest second; the algorithm is not finer than that."""
    whole = instant.replace(microsecond=0)
    return whole + timedelta(seconds=1) if instant.microsecond >= 500_000 else whole


def _event_on_utc_date(event: str, observer: Observer, day: date) -> datetime | None:
    target = EVENTS[event]
    try:
        if target is None:
            return _round_to_second(noon(observer, day).astimezone(UTC))
        elevation, direction = target
        instant = time_at_elevation(observer, elevation, day, direction, UTC, with_refraction=False)
        return _round_to_second(instant)
    except ValueError:
        # astral raises ValueError when the sun does not reach the elevation that day.
        return None


def _parse(expression: str) -> tuple[str, float, float, timedelta]:
    parts = expression.split()
    if len(parts) not in (3, 4):
        raise ScheduleError(
            "expression",
            expression,
            "expected EVENT LATITUDE LONGITUDE [OFFSET], e.g. sunset 52.3676 4.9041 -15m",
        )
    event = parts[0].lower()
    if event not in EVENTS:
        raise ScheduleError(
            "expression", expression, f"unknown event '{parts[0]}'; use one of {', '.join(EVENTS)}"
        )
    latitude = _parse_degrees(expression, parts[1], "latitude", 90)
    longitude = _parse_degrees(expression, parts[2], "longitude", 180)
    offset = _parse_offset(expression, parts[3]) if len(parts) == 4 else timedelta(0)
    return event, latitude, longitude, offset


def _parse_degrees(expression: str, text: str, name: str, limit: int) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise ScheduleError(
            "expression", expression, f"{name} '{text}' is not a number of degrees"
        ) from error
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise ScheduleError(
            "expression", expression, f"{name} {text} is out of range -{limit} to {limit}"
        )
    return value


def _parse_offset(expression: str, text: str) -> timedelta:
    try:
        offset = parse_signed_duration(text, "offset")
    except ScheduleError as error:
        raise ScheduleError("expression", expression, f"offset '{text}' {error.reason}") from error
    if abs(offset) >= _MAX_OFFSET:
        raise ScheduleError("expression", expression, f"offset '{text}' must be shorter than 1 day")
    return offset
