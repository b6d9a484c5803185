"""Parser for cron expressions.

Five fields (minute hour day-of-month month day-of-week) as POSIX and Vixie
cron define them, or six with seconds first (the Quartz and Spring
convention). Supported on top of POSIX: month and weekday names, ``7`` for
Sunday, ``n/step`` meaning ``n-max/step``, ``L``, ``LW`` and ``nW`` in
day-of-month, ``nL`` and ``n#k`` in day-of-week, ``?`` in the day fields of
six-field expressions, and the ``@`` aliases except ``@reboot``.
Every error is a ScheduleError(field="expression") whose reason names the
cron field and the bad value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics.cron_days import DaySpec

MAX_EXPRESSION_LENGTH = 1000

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

_NEAREST_WEEKDAY = re.compile(r"(\d+)W")
_LAST_WEEKDAY = re.compile(r"(\d+|[a-z]+)l")
_NTH_WEEKDAY = re.compile(r"(\d+|[a-z]+)#(\d+)")


@dataclass(frozen=True)
class _FieldRange:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name_value: int = 0
    star_high: int | None = None

    @property
    def star_range(self) -> tuple[int, int]:
        """Return the values ``*`` covers; ``n/step`` runs from n to the same end."""
        return self.low, self.high if self.star_high is None else self.star_high

    def describe(self) -> str:
        return f"{self.low}-{self.high}"


SECOND = _FieldRange("second", 0, 59)
MINUTE = _FieldRange("minute", 0, 59)
HOUR = _FieldRange("hour", 0, 23)
DAY_OF_MONTH = _FieldRange("day-of-month", 1, 31)
MONTH = _FieldRange("month", 1, 12, MONTH_NAMES, 1)
# 7 is accepted as Sunday, but * covers 0-6 so Sunday is not counted twice.
DAY_OF_WEEK = _FieldRange("day-of-week", 0, 7, WEEKDAY_NAMES, 0, star_high=6)


@dataclass(frozen=True)
class CronFields:
    """A parsed cron expression: sorted values of each field and the day rules."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    days: DaySpec
    fixed_time: bool


class _FieldError(Exception):
    """A bad field value; parse_cron turns it into ScheduleError with the whole expression."""


def parse_cron(expression: str) -> CronFields:
    """Parse a cron expression, raising ScheduleError(field="expression")."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ScheduleError(
            "expression", expression, f"is longer than {MAX_EXPRESSION_LENGTH} characters"
        )
    try:
        return _parse_fields(expression)
    except _FieldError as error:
        raise ScheduleError("expression", expression, str(error)) from error


def _parse_fields(expression: str) -> CronFields:
    text = expression.strip()
    if text.startswith("@"):
        return _parse_alias(text)
    fields = text.split()
    if len(fields) == 5:
        fields.insert(0, "0")
        six = False
    elif len(fields) == 6:
        six = True
    else:
        raise _FieldError(
            f"expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or 6 with seconds first, got {len(fields)}"
        )
    return _build(fields, six)


def _parse_alias(text: str) -> CronFields:
    alias = text.lower()
    if alias == "@reboot":
        raise _FieldError(
            "@reboot is not supported because a scheduler service has no boot to run at; "
            "use a one_shot schedule"
        )
    if alias not in ALIASES:
        raise _FieldError(f"unknown alias {text}; use one of {', '.join(ALIASES)}")
    fields = ALIASES[alias].split()
    fields.insert(0, "0")
    return _build(fields, six=False)


def _build(fields: list[str], six: bool) -> CronFields:
    second, minute, hour, month_day, month, weekday = fields
    for text, rule in ((second, SECOND), (minute, MINUTE), (hour, HOUR), (month, MONTH)):
        _reject_question_mark(text, rule, six, day_field=False)
    _reject_question_mark(month_day, DAY_OF_MONTH, six, day_field=True)
    _reject_question_mark(weekday, DAY_OF_WEEK, six, day_field=True)
    return CronFields(
        seconds=_sorted_values(second, SECOND),
        minutes=_sorted_values(minute, MINUTE),
        hours=_sorted_values(hour, HOUR),
        months=_sorted_values(month, MONTH),
        days=_parse_days(month_day, weekday),
        fixed_time=not minute.startswith("*") and not hour.startswith("*"),
    )


def _reject_question_mark(text: str, rule: _FieldRange, six: bool, day_field: bool) -> None:
    if "?" not in text:
        return
    if not six:
        raise _FieldError(
            f"{rule.name} '{text}': ? is only for six-field expressions (seconds first); "
            "use * in five fields"
        )
    if not day_field or text != "?":
        raise _FieldError(
            f"{rule.name} '{text}': ? is allowed only alone, in day-of-month or day-of-week"
        )


def _sorted_values(text: str, rule: _FieldRange) -> tuple[int, ...]:
    return tuple(sorted(_expand_list(text, rule)))


def _expand_list(text: str, rule: _FieldRange) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values |= _expand_item(item, rule)
    return values


def _expand_item(item: str, rule: _FieldRange) -> set[int]:
    if not item:
        raise _FieldError(f"{rule.name} has an empty list item; remove the extra comma")
    base, slash, step_text = item.partition("/")
    step = _parse_step(step_text, rule) if slash else 1
    if base in ("*", "?"):
        low, high = rule.star_range
    elif "-" in base:
        low, high = _parse_range(base, rule)
    else:
        low = _parse_value(base, rule)
        high = max(low, rule.star_range[1]) if slash else low
    return set(range(low, high + 1, step))


def _parse_range(text: str, rule: _FieldRange) -> tuple[int, int]:
    first, _, last = text.partition("-")
    if not first or not last:
        raise _FieldError(f"{rule.name} range '{text}' needs a value on each side of -")
    low, high = _parse_value(first, rule), _parse_value(last, rule)
    if low > high:
        raise _FieldError(f"{rule.name} range {text} is reversed; write the smaller value first")
    return low, high


def _parse_step(text: str, rule: _FieldRange) -> int:
    width = rule.high - rule.low + 1
    if not (text.isascii() and text.isdigit()):
        raise _FieldError(f"{rule.name} step '{text}' is not a whole number from 1 to {width}")
    step = int(text)
    if not 1 <= step <= width:
        raise _FieldError(f"{rule.name} step {step} is out of range 1-{width}")
    return step


def _parse_value(text: str, rule: _FieldRange) -> int:
    lowered = text.lower()
    if lowered in rule.names:
        return rule.names.index(lowered) + rule.first_name_value
    if not (text.isascii() and text.isdigit()):
        return _reject_word(text, rule)
    value = int(text)
    if not rule.low <= value <= rule.high:
        raise _FieldError(f"{rule.name} {value} is out of range {rule.describe()}")
    return value


def _reject_word(text: str, rule: _FieldRange) -> int:
    if rule.names and text.isalpha():
        names = f"{rule.names[0]}-{rule.names[-1]}"
        raise _FieldError(f"{rule.name} name '{text}' is unknown; use {names} or {rule.describe()}")
    raise _FieldError(f"{rule.name} value '{text}' is not a number in {rule.describe()}")


def _parse_days(month_day: str, weekday: str) -> DaySpec:
    by_month_day = _parse_month_day_items(month_day)
    by_weekday = _parse_weekday_items(weekday)
    return DaySpec(
        month_days=by_month_day.days,
        last_day=by_month_day.last_day,
        last_weekday_of_month=by_month_day.last_weekday,
        nearest_weekdays=by_month_day.nearest,
        weekdays=by_weekday.weekdays,
        last_weekdays=by_weekday.last,
        nth_weekdays=by_weekday.nth,
        month_restricted=not month_day.startswith(("*", "?")),
        week_restricted=not weekday.startswith(("*", "?")),
    )


class _MonthDayItems(NamedTuple):
    days: frozenset[int]
    last_day: bool
    last_weekday: bool
    nearest: frozenset[int]


class _WeekdayItems(NamedTuple):
    weekdays: frozenset[int]
    last: frozenset[int]
    nth: frozenset[tuple[int, int]]


def _parse_month_day_items(text: str) -> _MonthDayItems:
    plain: list[str] = []
    nearest: set[int] = set()
    last_day = last_weekday = False
    for item in text.split(","):
        upper = item.upper()
        match = _NEAREST_WEEKDAY.fullmatch(upper)
        if upper == "L":
            last_day = True
        elif upper == "LW":
            last_weekday = True
        elif match:
            nearest.add(_parse_value(match.group(1), DAY_OF_MONTH))
        elif "L" in upper or "W" in upper:
            raise _FieldError(
                f"day-of-month '{item}' is not supported; use L (last day), LW (last weekday) "
                "or nW (weekday nearest day n)"
            )
        else:
            plain.append(item)
    days = _expand_list(",".join(plain), DAY_OF_MONTH) if plain else set()
    return _MonthDayItems(frozenset(days), last_day, last_weekday, frozenset(nearest))


def _parse_weekday_items(text: str) -> _WeekdayItems:
    plain: list[str] = []
    last: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for item in text.split(","):
        lowered = item.lower()
        last_match = _LAST_WEEKDAY.fullmatch(lowered)
        nth_match = _NTH_WEEKDAY.fullmatch(lowered)
        if last_match:
            last.add(_parse_value(last_match.group(1), DAY_OF_WEEK) % 7)
        elif nth_match:
            weekday = _parse_value(nth_match.group(1), DAY_OF_WEEK) % 7
            nth.add((weekday, _parse_nth(item, nth_match.group(2))))
        elif "l" in lowered or "#" in lowered:
            raise _FieldError(
                f"day-of-week '{item}' is not supported; use nL (last weekday n of the month) "
                "or n#k (k-th weekday n of the month, k from 1 to 5)"
            )
        else:
            plain.append(item)
    values = _expand_list(",".join(plain), DAY_OF_WEEK) if plain else set()
    weekdays = frozenset(value % 7 for value in values)
    return _WeekdayItems(weekdays, frozenset(last), frozenset(nth))


def _parse_nth(item: str, text: str) -> int:
    nth = int(text)
    if not 1 <= nth <= 5:
        raise _FieldError(f"day-of-week '{item}': occurrence {nth} is out of range 1-5")
    return nth
