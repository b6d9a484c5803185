"""Property tests of cron schedules against brute-force references."""

from __future__ import annotations

import calendar
import functools
import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.semantics.reference import (
    ReferenceCron,
    nearest_weekday,
    nth_weekdays,
    offset_changes,
    reference_slots,
)
from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import CronSchedule, Schedule, parse_schedule

ZONES = (
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Pacific/Apia",
    "Asia/Kolkata",
)
WINDOW = timedelta(days=3)
ONE_MICROSECOND = timedelta(microseconds=1)
PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@functools.cache
def changes_of(zone_name: str, year: int) -> tuple[datetime, ...]:
    return tuple(offset_changes(ZoneInfo(zone_name), year))


def _field_item(draw: st.DrawFn, low: int, high: int) -> str:
    shape = draw(st.sampled_from(["value", "range", "step", "range_step"]))
    first = draw(st.integers(low, high))
    if shape == "value":
        return str(first)
    if shape == "step":
        return f"{first}/{draw(st.integers(1, high - low + 1))}"
    last = draw(st.integers(first, high))
    if shape == "range":
        return f"{first}-{last}"
    return f"{first}-{last}/{draw(st.integers(1, high - low + 1))}"


@st.composite
def cron_field(draw: st.DrawFn, low: int, high: int, star_weight: int = 1) -> str:
    """Draw one field: *, */n, or a list of values, ranges and steps."""
    choice = draw(st.integers(0, 3 + star_weight))
    if choice == 0:
        return f"*/{draw(st.integers(1, high - low + 1))}"
    if choice > 3:
        return "*"
    items = [_field_item(draw, low, high) for _ in range(draw(st.integers(1, 3)))]
    return ",".join(items)


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    """Draw a five-field expression, biased to fixed times near typical clock changes."""
    minute = draw(cron_field(0, 59) | st.sampled_from(["0", "30", "15,45", "5-59/20", "59"]))
    hour = draw(
        cron_field(0, 23) | cron_field(0, 4) | st.sampled_from(["0", "1", "2", "3", "1-2", "0,2"])
    )
    month_day = draw(cron_field(1, 31, star_weight=4))
    month = draw(cron_field(1, 12, star_weight=6))
    weekday = draw(cron_field(0, 7, star_weight=4))
    return f"{minute} {hour} {month_day} {month} {weekday}"


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, datetime]:
    """Draw a zone and a window start, usually shortly before an offset change."""
    zone_name = draw(st.sampled_from(ZONES))
    year = draw(
        st.sampled_from([2011, 2012]) if zone_name == "Pacific/Apia" else st.integers(2005, 2030)
    )
    changes = changes_of(zone_name, year)
    near_change = draw(st.booleans())
    if changes and near_change:
        change = draw(st.sampled_from(changes))
        start = change - timedelta(minutes=draw(st.integers(0, 48 * 60)))
    else:
        start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(
            minutes=draw(st.integers(0, 364 * 1440))
        )
    return zone_name, start


def _slots_in(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    slots = []
    for slot in schedule.slots_after(start - ONE_MICROSECOND):
        if slot >= end:
            break
        slots.append(slot)
    return slots


def _parse_or_confirm_never(expression: str, zone_name: str) -> CronSchedule | None:
    """Parse ``expression``; if it is rejected as never matching, check that no day matches."""
    try:
        schedule = parse_schedule("cron", expression, zone_name)
    except ScheduleError as error:
        assert "never matches" in error.reason
        assert not _any_day_matches(ReferenceCron(expression))
        return None
    assert isinstance(schedule, CronSchedule)
    return schedule


def _any_day_matches(reference: ReferenceCron) -> bool:
    """Scan 2000-2027, a full 28-year cycle of weekdays and leap years."""
    first = datetime(2000, 1, 1, min(reference.hours), min(reference.minutes))
    return any(reference.matches(first + timedelta(days=days)) for days in range(28 * 366))


@PROPERTY_SETTINGS
@given(expression=cron_expressions(), window=windows())
def test_cron_slots_equal_minute_by_minute_reference(
    expression: str, window: tuple[str, datetime]
) -> None:
    zone_name, start = window
    schedule = _parse_or_confirm_never(expression, zone_name)
    if schedule is None:
        return
    end = start + WINDOW

    slots = _slots_in(schedule, start, end)
    expected = reference_slots(ReferenceCron(expression), ZoneInfo(zone_name), start, end)

    assert slots == expected
    assert all(earlier < later for earlier, later in itertools.pairwise(slots))
    assert schedule.count_between(start, end) == len(slots)


@PROPERTY_SETTINGS
@given(expression=cron_expressions(), window=windows())
def test_cron_slots_match_wall_clock_or_a_change(
    expression: str, window: tuple[str, datetime]
) -> None:
    zone_name, start = window
    schedule = _parse_or_confirm_never(expression, zone_name)
    if schedule is None:
        return
    zone = ZoneInfo(zone_name)

    for slot in _slots_in(schedule, start, start + WINDOW):
        local = slot.astimezone(zone)
        if schedule.matches(local.replace(tzinfo=None)):
            continue
        assert schedule.fixed_time
        assert (slot - timedelta(seconds=1)).astimezone(zone).utcoffset() != local.utcoffset()


@PROPERTY_SETTINGS
@given(
    expression=cron_expressions(),
    window=windows(),
    probe_minutes=st.integers(0, 3 * 1440),
    probe_seconds=st.integers(0, 59),
)
def test_cron_next_and_previous_agree_with_enumeration(
    expression: str, window: tuple[str, datetime], probe_minutes: int, probe_seconds: int
) -> None:
    zone_name, start = window
    schedule = _parse_or_confirm_never(expression, zone_name)
    if schedule is None:
        return
    slots = _slots_in(schedule, start, start + 2 * WINDOW)
    probe = start + timedelta(minutes=probe_minutes, seconds=probe_seconds)

    after = [slot for slot in slots if slot > probe]
    before = [slot for slot in slots if slot < probe]
    if after:
        assert schedule.next_after(probe) == after[0]
    if before:
        assert schedule.previous_before(probe) == before[-1]
    for earlier, later in itertools.pairwise(slots[:21]):
        assert schedule.previous_before(later) == earlier


@st.composite
def day_field_extensions(draw: st.DrawFn) -> tuple[str, str]:
    """Draw day-of-month and day-of-week fields using L, W, nL and #."""
    month_day = draw(
        st.sampled_from(["*", "L", "LW"])
        | st.integers(1, 31).map(lambda day: f"{day}W")
        | st.integers(1, 28).map(str)
    )
    weekday = draw(
        st.sampled_from(["*"])
        | st.integers(0, 7).map(lambda day: f"{day}L")
        | st.tuples(st.integers(0, 7), st.integers(1, 5)).map(lambda pair: f"{pair[0]}#{pair[1]}")
    )
    return month_day, weekday


def _reference_day_matches(year: int, month: int, day: int, month_day: str, weekday: str) -> bool:
    length = calendar.monthrange(year, month)[1]
    if month_day == "*":
        by_month_day = True
    elif month_day == "L":
        by_month_day = day == length
    elif month_day == "LW":
        by_month_day = day == nearest_weekday(year, month, length)
    elif month_day.endswith("W"):
        by_month_day = day == nearest_weekday(year, month, int(month_day[:-1]))
    else:
        by_month_day = day == int(month_day)
    if weekday == "*":
        by_weekday = True
    elif weekday.endswith("L"):
        by_weekday = day == nth_weekdays(year, month, int(weekday[:-1]) % 7)[-1]
    else:
        target, nth = (int(part) for part in weekday.split("#"))
        found = nth_weekdays(year, month, target % 7)
        by_weekday = len(found) >= nth and day == found[nth - 1]
    if month_day != "*" and weekday != "*":
        return by_month_day or by_weekday
    return by_month_day and by_weekday


@settings(max_examples=60, deadline=None)
@given(fields=day_field_extensions(), year=st.integers(1999, 2030))
def test_day_extensions_match_reference_calendar(fields: tuple[str, str], year: int) -> None:
    month_day, weekday = fields
    schedule = parse_schedule("cron", f"0 0 {month_day} * {weekday}", "UTC")
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)

    slots = _slots_in(schedule, start, end)
    expected = [
        datetime(year, month, day, tzinfo=UTC)
        for month in range(1, 13)
        for day in range(1, 32)
        if _valid(year, month, day) and _reference_day_matches(year, month, day, month_day, weekday)
    ]

    assert slots == expected


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


@settings(max_examples=60, deadline=None)
@given(
    seconds=st.integers(1, 10**9),
    anchor_offset=st.integers(-(10**12), 10**12),
    zone_name=st.sampled_from(ZONES),
)
def test_interval_slots_evenly_spaced(seconds: int, anchor_offset: int, zone_name: str) -> None:
    anchor = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(microseconds=anchor_offset)
    schedule = parse_schedule("interval", str(seconds), zone_name, anchor)
    after = anchor + timedelta(seconds=seconds * 3 // 2)

    slots = [slot for _, slot in zip(range(10), schedule.slots_after(after), strict=False)]

    assert slots[0] > after
    assert slots[0] - timedelta(seconds=seconds) <= after
    for earlier, later in itertools.pairwise(slots):
        assert later - earlier == timedelta(seconds=seconds)
    assert (slots[0] - anchor) % timedelta(seconds=seconds) == timedelta(0)
