"""Day selection by the day-of-month and day-of-week fields of a cron expression.

The selection depends only on the month's length and the weekday of its first
day, so at most 4 * 7 distinct day sets exist and each is computed once.
Weekdays use cron numbering: 0 is Sunday, 6 is Saturday.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SATURDAY = 6
SUNDAY = 0


@dataclass(frozen=True)
class DaySpec:
    """The parsed day-of-month and day-of-week fields.

    A field is restricted when its text does not start with ``*`` (or ``?`` in
    six-field expressions). When both are restricted a day matches if either
    field matches (POSIX and Vixie cron); otherwise both must match.
    """

    month_days: frozenset[int] = frozenset()
    last_day: bool = False
    last_weekday_of_month: bool = False
    nearest_weekdays: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    last_weekdays: frozenset[int] = frozenset()
    nth_weekdays: frozenset[tuple[int, int]] = frozenset()
    month_restricted: bool = False
    week_restricted: bool = False
    _cache: dict[tuple[int, int], tuple[int, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def days(self, length: int, first_weekday: int) -> tuple[int, ...]:
        """Return the sorted matching days of a month of ``length`` days.

        ``first_weekday`` is the cron weekday of the month's first day.
        """
        key = (length, first_weekday)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = tuple(sorted(self._select(length, first_weekday)))
        return found

    def _select(self, length: int, first_weekday: int) -> set[int]:
        by_month_day = self._month_day_matches(length, first_weekday)
        by_weekday = self._weekday_matches(length, first_weekday)
        if self.month_restricted and self.week_restricted:
            return by_month_day | by_weekday
        return by_month_day & by_weekday

    def _month_day_matches(self, length: int, first_weekday: int) -> set[int]:
        selected = {day for day in self.month_days if day <= length}
        if self.last_day:
            selected.add(length)
        if self.last_weekday_of_month:
            selected.add(_nearest_weekday(length, length, first_weekday))
        for day in self.nearest_weekdays:
            if day <= length:
                selected.add(_nearest_weekday(day, length, first_weekday))
        return selected

    def _weekday_matches(self, length: int, first_weekday: int) -> set[int]:
        selected = {
            day for day in range(1, length + 1) if (first_weekday + day - 1) % 7 in self.weekdays
        }
        last_weekday = (first_weekday + length - 1) % 7
        for weekday in self.last_weekdays:
            selected.add(length - (last_weekday - weekday) % 7)
        for weekday, nth in self.nth_weekdays:
            day = 1 + (weekday - first_weekday) % 7 + 7 * (nth - 1)
            if day <= length:
                selected.add(day)
        return selected


def _nearest_weekday(day: int, length: int, first_weekday: int) -> int:
    """Return the Monday-Friday day nearest ``day`` without leaving the month.

    Saturday moves to Friday, or to Monday the 3rd when it is the 1st. Sunday
    moves to Monday, or to Friday when it is the last day of the month.
    """
    weekday = (first_weekday + day - 1) % 7
    if weekday == SATURDAY:
        return day - 1 if day > 1 else day + 2
    if weekday == SUNDAY:
        return day + 1 if day < length else day - 2
    return day
