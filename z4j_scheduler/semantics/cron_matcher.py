"""Matching a parsed cron expression against wall-clock times.

Wall times are integer "wall seconds": seconds since 1970-01-01T00:00 on a
clock that ignores offsets, so day and time of day are a divmod by 86400.
The matcher has no notion of zones, because cron.py maps wall seconds to instants.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import date, datetime

from z4j_scheduler.semantics.cron_parser import MONTH_NAMES, CronFields

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_FIRST_DAY = 1 - _EPOCH_ORDINAL
LAST_DAY = date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL
_MONTH_LENGTHS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_FIRST_WEEKDAYS = range(7)


def month_length(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _MONTH_LENGTHS[month - 1]


def _day_number(year: int, month: int, day: int) -> int:
    return date(year, month, day).toordinal() - _EPOCH_ORDINAL


class WallClockMatcher:
    """Finds and counts the wall seconds that a cron expression matches."""

    def __init__(self, fields: CronFields) -> None:
        self._fields = fields
        self._seconds = fields.seconds
        self._minutes = fields.minutes
        self._hours = fields.hours
        self._months = fields.months
        self._month_set = frozenset(fields.months)
        self._hour_set = frozenset(fields.hours)
        self._minute_set = frozenset(fields.minutes)
        self._second_set = frozenset(fields.seconds)
        self._per_minute = len(fields.seconds)
        self._per_hour = len(fields.minutes) * self._per_minute
        self._per_day = len(fields.hours) * self._per_hour
        self._first_time = fields.hours[0] * 3600 + fields.minutes[0] * 60 + fields.seconds[0]

    def __repr__(self) -> str:
        return f"WallClockMatcher({self._fields!r})"

    def never_matching_months(self) -> list[str] | None:
        """Return the selected month names if no day in them can match, else None.

        Every combination of a month (February with 28 or 29 days) and the
        weekday of its first day occurs in the 400-year Gregorian cycle, so
        checking those 7 * 13 combinations decides whether any date matches.
        """
        for month in self._months:
            lengths = (28, 29) if month == 2 else (_MONTH_LENGTHS[month - 1],)
            for length in lengths:
                if any(self._fields.days.days(length, first) for first in _FIRST_WEEKDAYS):
                    return None
        return [MONTH_NAMES[month - 1] for month in self._months]

    def matches(self, wall: datetime) -> bool:
        """Return whether a naive wall-clock datetime matches every field."""
        if wall.microsecond or wall.month not in self._month_set:
            return False
        if wall.hour not in self._hour_set or wall.minute not in self._minute_set:
            return False
        return wall.second in self._second_set and wall.day in self._days_of(wall)

    def next_match(self, wall: int) -> int | None:
        """Return the first matching wall second at or after ``wall``, or None after 9999."""
        day, second = divmod(wall, 86400)
        if day < _FIRST_DAY:
            day, second = _FIRST_DAY, 0
        while day <= LAST_DAY:
            current = date.fromordinal(day + _EPOCH_ORDINAL)
            month = current.month
            if month in self._month_set:
                days = self._days_of(current)
                dom = current.day
                if dom in days:
                    time_of_day = self._time_at_or_after(second)
                    if time_of_day is not None:
                        return day * 86400 + time_of_day
                index = bisect_right(days, dom)
                if index < len(days):
                    return (day + days[index] - dom) * 86400 + self._first_time
            day = self._next_month_day(current.year, month)
            second = 0
        return None

    def count_matches(self, start: int, end: int) -> int:
        """Return how many matching wall seconds lie in [start, end)."""
        if end <= start:
            return 0
        first_day, first_second = divmod(start, 86400)
        last_day, last_second = divmod(end, 86400)
        if first_day == last_day:
            span = self._times_before(last_second) - self._times_before(first_second)
            return span if self._day_matches(first_day) else 0
        total = self._count_days(first_day + 1, last_day) * self._per_day
        if self._day_matches(first_day):
            total += self._per_day - self._times_before(first_second)
        if self._day_matches(last_day):
            total += self._times_before(last_second)
        return total

    def _days_of(self, current: date) -> tuple[int, ...]:
        length = month_length(current.year, current.month)
        first_weekday = (current.weekday() - current.day + 2) % 7
        return self._fields.days.days(length, first_weekday)

    def _day_matches(self, day: int) -> bool:
        if day > LAST_DAY:
            return False
        current = date.fromordinal(day + _EPOCH_ORDINAL)
        return current.month in self._month_set and current.day in self._days_of(current)

    def _count_days(self, start: int, end: int) -> int:
        """Return how many matching days lie in [start, end), walking month by month."""
        count = 0
        day = start
        while day < min(end, LAST_DAY + 1):
            current = date.fromordinal(day + _EPOCH_ORDINAL)
            length = month_length(current.year, current.month)
            remaining = length - current.day + 1
            if current.month in self._month_set:
                last = current.day + min(remaining, end - day) - 1
                days = self._days_of(current)
                count += bisect_right(days, last) - bisect_left(days, current.day)
            day += remaining
        return count

    def _time_at_or_after(self, second: int) -> int | None:
        """Return the first matching second of the day at or after ``second``."""
        hour, rest = divmod(second, 3600)
        minute, second = divmod(rest, 60)
        hours, minutes, seconds = self._hours, self._minutes, self._seconds
        hour_index = bisect_left(hours, hour)
        if hour_index < len(hours) and hours[hour_index] == hour:
            minute_index = bisect_left(minutes, minute)
            if minute_index < len(minutes) and minutes[minute_index] == minute:
                second_index = bisect_left(seconds, second)
                if second_index < len(seconds):
                    return hour * 3600 + minute * 60 + seconds[second_index]
                minute_index += 1
            if minute_index < len(minutes):
                return hour * 3600 + minutes[minute_index] * 60 + seconds[0]
            hour_index += 1
        if hour_index < len(hours):
            return hours[hour_index] * 3600 + minutes[0] * 60 + seconds[0]
        return None

    def _times_before(self, second: int) -> int:
        """Return how many matching seconds of a day lie before ``second`` (0 to 86400)."""
        hour, rest = divmod(second, 3600)
        minute, second = divmod(rest, 60)
        count = bisect_left(self._hours, hour) * self._per_hour
        if hour in self._hour_set:
            count += bisect_left(self._minutes, minute) * self._per_minute
            if minute in self._minute_set:
                count += bisect_left(self._seconds, second)
        return count

    def _next_month_day(self, year: int, month: int) -> int:
        """Return the day number of the 1st of the next selected month after ``month``."""
        index = bisect_right(self._months, month)
        if index < len(self._months):
            return _day_number(year, self._months[index], 1)
        if year >= 9999:
            return LAST_DAY + 1
        return _day_number(year + 1, self._months[0], 1)
