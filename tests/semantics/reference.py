"""Brute-force reference models of cron, written independently of the package.

They walk minute by minute (or day by day) and are only fast enough for
windows of a few days, which is what the property tests use.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

ONE_MINUTE = timedelta(minutes=1)
CORRECTION = timedelta(hours=3)
MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}
WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


def _value(text: str, names: dict[str, int]) -> int:
    lowered = text.lower()
    for name, number in names.items():
        if name.lower() == lowered:
            return number
    return int(text)


def expand_field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    """Expand a standard cron field (lists, ranges, steps, names) into its values."""
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first_text, last_text = base.split("-")
            first, last = _value(first_text, names or {}), _value(last_text, names or {})
        else:
            first = _value(base, names or {})
            last = max(first, high) if step_text else first
        values.update(range(first, last + 1, step))
    return values


@dataclass
class ReferenceCron:
    """A five-field cron expression in standard syntax, matched field by field."""

    expression: str

    def __post_init__(self) -> None:
        minute, hour, month_day, month, weekday = self.expression.split()
        self.minutes = expand_field(minute, 0, 59)
        self.hours = expand_field(hour, 0, 23)
        self.month_days = expand_field(month_day, 1, 31)
        self.months = expand_field(month, 1, 12, MONTHS)
        self.weekdays = {value % 7 for value in expand_field(weekday, 0, 6, WEEKDAYS)}
        self.either_day = not month_day.startswith("*") and not weekday.startswith("*")
        self.fixed_time = not minute.startswith("*") and not hour.startswith("*")

    def matches(self, wall: datetime) -> bool:
        if wall.minute not in self.minutes or wall.hour not in self.hours:
            return False
        if wall.month not in self.months:
            return False
        by_month_day = wall.day in self.month_days
        by_weekday = wall.isoweekday() % 7 in self.weekdays
        if self.either_day:
            return by_month_day or by_weekday
        return by_month_day and by_weekday


def reference_slots(
    cron: ReferenceCron, zone: ZoneInfo, start: datetime, end: datetime
) -> list[datetime]:
    """Return the slots in [start, end) under cronie's DST rules, minute by minute.

    ``start`` must be a whole minute. A wall time in the second occurrence of
    a repeated interval (fold=1) is skipped by a fixed-time job when the
    change is under 3 hours. At a spring-forward change under 3 hours, a
    fixed-time job with any matching skipped wall minute fires at the change.
    """
    slots: list[datetime] = []
    instant = start.astimezone(UTC)
    previous_offset = _offset(instant - ONE_MINUTE, zone)
    while instant < end:
        local = instant.astimezone(zone)
        offset = local.utcoffset()
        assert offset is not None
        jump = offset - previous_offset
        gap_fires = cron.fixed_time and timedelta(0) < jump < CORRECTION
        fires_for_gap = gap_fires and _gap_matches(cron, instant, previous_offset, offset)
        fires_on_wall_time = cron.matches(local.replace(tzinfo=None)) and not _repeat_skipped(
            cron, local
        )
        if fires_for_gap or fires_on_wall_time:
            slots.append(instant)
        previous_offset = offset
        instant += ONE_MINUTE
    return slots


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _gap_matches(
    cron: ReferenceCron, change: datetime, before: timedelta, after: timedelta
) -> bool:
    wall = (change + before).replace(tzinfo=None)
    gap_end = (change + after).replace(tzinfo=None)
    while wall < gap_end:
        if cron.matches(wall):
            return True
        wall += ONE_MINUTE
    return False


def _repeat_skipped(cron: ReferenceCron, local: datetime) -> bool:
    if not cron.fixed_time or local.fold != 1:
        return False
    first_offset = local.replace(fold=0).utcoffset()
    second_offset = local.utcoffset()
    assert first_offset is not None and second_offset is not None
    return timedelta(0) < first_offset - second_offset < CORRECTION


def offset_changes(zone: ZoneInfo, year: int) -> list[datetime]:
    """Return the instants in ``year`` where the zone's offset changes, scanning hourly."""
    changes = []
    instant = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    previous = _offset(instant, zone)
    while instant < end:
        following = instant + timedelta(hours=1)
        offset = _offset(following, zone)
        if offset != previous:
            changes.append(_refine_change(zone, instant, following, previous))
        previous = offset
        instant = following
    return changes


def _refine_change(
    zone: ZoneInfo, low: datetime, high: datetime, low_offset: timedelta
) -> datetime:
    minute = low
    while _offset(minute, zone) == low_offset and minute < high:
        minute += ONE_MINUTE
    return minute


def nearest_weekday(year: int, month: int, day: int) -> int | None:
    """Return the Monday-Friday day of the month closest to ``day``, or None if no such day."""
    length = calendar.monthrange(year, month)[1]
    if day > length:
        return None
    weekdays = [d for d in range(1, length + 1) if date(year, month, d).weekday() < 5]
    return min(weekdays, key=lambda d: abs(d - day))


def nth_weekdays(year: int, month: int, weekday: int) -> list[int]:
    """Return the days of the month falling on cron ``weekday`` (0 = Sunday), in order."""
    length = calendar.monthrange(year, month)[1]
    return [d for d in range(1, length + 1) if date(year, month, d).isoweekday() % 7 == weekday]
