"""Interval and one-shot schedules: parsing, slots, and the queries catch-up uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import (
    IntervalSchedule,
    OneShotSchedule,
    next_slots,
    parse_instant,
    parse_schedule,
)

ANCHOR = datetime(2024, 3, 10, 6, 0, tzinfo=UTC)


def interval(expression: str, anchor: datetime = ANCHOR, zone: str = "UTC") -> IntervalSchedule:
    schedule = parse_schedule("interval", expression, zone, anchor)
    assert isinstance(schedule, IntervalSchedule)
    return schedule


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("600", 600),
        ("1", 1),
        ("90m", 5400),
        ("1h30m", 5400),
        ("2d", 172800),
        ("15s", 15),
        ("1d2h30m15s", 95415),
        ("1d15s", 86415),
        (" 45m ", 2700),
    ],
)
def test_interval_durations_parse(expression: str, seconds: int) -> None:
    assert interval(expression).period == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("expression", "wording"),
    [
        ("0", "must be at least 1 second"),
        ("0s", "must be at least 1 second"),
        ("-5", "is not a duration"),
        ("+5", "is not a duration"),
        ("1x", "is not a duration"),
        ("30m1h", "is not a duration"),
        ("1h1h", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("1w", "is not a duration"),
        ("h", "is not a duration"),
        ("9" * 30, "is longer than 999999999 days"),
    ],
)
def test_interval_bad_durations_rejected(expression: str, wording: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("interval", expression, "UTC", ANCHOR)

    assert raised.value.field == "expression"
    assert raised.value.value == expression
    assert wording in raised.value.reason


def test_interval_syntax_error_shows_the_syntax() -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("interval", "1x", "UTC", ANCHOR)

    assert str(raised.value) == (
        "invalid expression '1x': is not a duration; "
        "write seconds (600) or whole units d, h, m, s in that order (1h30m)"
    )


def test_interval_empty_expression_rejected() -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("interval", "  ", "UTC", ANCHOR)

    assert raised.value.field == "expression"


def test_interval_requires_start_at() -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("interval", "600", "UTC")

    assert raised.value.field == "start_at"
    assert "anchor" in raised.value.reason


def test_interval_rejects_naive_start_at() -> None:
    with pytest.raises(TypeError, match="start_at must be an aware datetime"):
        parse_schedule("interval", "600", "UTC", datetime(2024, 1, 1))


def test_interval_first_slot_is_anchor() -> None:
    schedule = interval("1h")

    assert next_slots(schedule, ANCHOR - timedelta(days=3), 2) == [
        ANCHOR,
        ANCHOR + timedelta(hours=1),
    ]


def test_interval_after_is_exclusive() -> None:
    schedule = interval("1h")

    assert schedule.next_after(ANCHOR) == ANCHOR + timedelta(hours=1)
    assert schedule.next_after(ANCHOR + timedelta(minutes=59)) == ANCHOR + timedelta(hours=1)


def test_interval_ignores_offset_changes() -> None:
    schedule = interval(
        "1d", anchor=parse_instant("2024-03-09T12:00:00-05:00", "start_at"), zone="America/New_York"
    )

    found = next_slots(schedule, parse_instant("2024-03-09T12:00:00-05:00", "after"), 2)

    assert found == [datetime(2024, 3, 10, 17, tzinfo=UTC), datetime(2024, 3, 11, 17, tzinfo=UTC)]
    assert [slot.astimezone(schedule.zone).hour for slot in found] == [13, 13]


def test_interval_keeps_anchor_fraction() -> None:
    schedule = interval("10s", anchor=ANCHOR + timedelta(microseconds=250))

    assert schedule.next_after(ANCHOR + timedelta(seconds=5)) == ANCHOR + timedelta(
        seconds=10, microseconds=250
    )


def test_interval_previous_before() -> None:
    schedule = interval("15m")

    assert schedule.previous_before(ANCHOR) is None
    assert schedule.previous_before(ANCHOR + timedelta(seconds=1)) == ANCHOR
    assert schedule.previous_before(ANCHOR + timedelta(minutes=15)) == ANCHOR
    assert schedule.previous_before(ANCHOR + timedelta(minutes=31)) == ANCHOR + timedelta(
        minutes=30
    )


def test_interval_counts_by_arithmetic() -> None:
    schedule = interval("1s")
    end = ANCHOR + timedelta(days=3650)

    assert schedule.count_between(ANCHOR - timedelta(days=1), end) == 3650 * 86400
    assert (
        schedule.count_between(ANCHOR + timedelta(microseconds=1), ANCHOR + timedelta(seconds=3))
        == 2
    )
    assert schedule.count_between(end, ANCHOR) == 0


def test_interval_last_slots() -> None:
    schedule = interval("1m")

    slots, total = schedule.last_slots(ANCHOR, ANCHOR + timedelta(hours=1), 3)

    assert total == 60
    assert slots == tuple(ANCHOR + timedelta(minutes=minute) for minute in (57, 58, 59))


def test_interval_stops_before_year_10000() -> None:
    schedule = interval("365d", anchor=datetime(9998, 1, 1, tzinfo=UTC))

    assert next_slots(schedule, datetime(9998, 1, 1, tzinfo=UTC), 5) == [
        datetime(9999, 1, 1, tzinfo=UTC)
    ]


def one_shot(expression: str, zone: str = "UTC") -> OneShotSchedule:
    schedule = parse_schedule("one_shot", expression, zone)
    assert isinstance(schedule, OneShotSchedule)
    return schedule


@pytest.mark.parametrize(
    ("expression", "zone", "instant"),
    [
        ("2024-06-01T12:00:00Z", "UTC", datetime(2024, 6, 1, 12, tzinfo=UTC)),
        ("2024-06-01T12:00:00+02:00", "America/New_York", datetime(2024, 6, 1, 10, tzinfo=UTC)),
        ("2024-06-01T12:00:00", "Europe/Berlin", datetime(2024, 6, 1, 10, tzinfo=UTC)),
        ("2024-06-01 12:00", "America/New_York", datetime(2024, 6, 1, 16, tzinfo=UTC)),
        ("2024-11-03T01:30:00-05:00", "America/New_York", datetime(2024, 11, 3, 6, 30, tzinfo=UTC)),
    ],
)
def test_one_shot_instants(expression: str, zone: str, instant: datetime) -> None:
    assert one_shot(expression, zone).instant == instant


def test_one_shot_rejects_wall_time_in_gap() -> None:
    with pytest.raises(ScheduleError) as raised:
        one_shot("2024-03-10T02:30:00", "America/New_York")

    assert raised.value.field == "expression"
    assert "'2024-03-10T02:30:00'" in str(raised.value)
    assert "does not exist in America/New_York" in raised.value.reason


def test_one_shot_rejects_repeated_wall_time() -> None:
    with pytest.raises(ScheduleError) as raised:
        one_shot("2024-11-03T01:30:00", "America/New_York")

    assert "'2024-11-03T01:30:00'" in str(raised.value)
    assert "occurs twice in America/New_York" in raised.value.reason
    assert "add a UTC offset" in raised.value.reason


@pytest.mark.parametrize("expression", ["tomorrow", "2024-13-01T00:00:00Z", "2024-06-01T25:00"])
def test_one_shot_rejects_non_iso_text(expression: str) -> None:
    with pytest.raises(ScheduleError, match="not an ISO-8601 instant") as raised:
        one_shot(expression)

    assert raised.value.field == "expression"


def test_one_shot_has_exactly_one_slot() -> None:
    schedule = one_shot("2018-12-04T15:00:00.001Z")
    instant = datetime(2018, 12, 4, 15, 0, 0, 1000, tzinfo=UTC)

    assert next_slots(schedule, datetime(2018, 1, 1, tzinfo=UTC), 5) == [instant]
    assert schedule.next_after(instant) is None
    assert schedule.previous_before(instant) is None
    assert schedule.previous_before(instant + timedelta(microseconds=1)) == instant
    assert schedule.count_between(instant, instant + timedelta(seconds=1)) == 1
    assert schedule.count_between(instant - timedelta(seconds=1), instant) == 0
