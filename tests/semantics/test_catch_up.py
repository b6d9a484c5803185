"""Catch-up planning: which slots fire after an outage, for each policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import (
    MAX_CATCH_UP_FIRES,
    CatchUpPlan,
    CatchUpPolicy,
    PlannedFire,
    Schedule,
    next_slots,
    parse_instant,
    parse_policy,
    parse_schedule,
    plan_catch_up,
)

HOURLY = parse_schedule("cron", "0 * * * *")
CURSOR = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
NOW = datetime(2024, 5, 1, 5, 0, 30, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def utc(text: str) -> datetime:
    return parse_instant(text, "expected")


def plan(
    policy: CatchUpPolicy,
    schedule: Schedule = HOURLY,
    cursor: datetime = CURSOR,
    now: datetime = NOW,
    grace: timedelta = GRACE,
) -> CatchUpPlan:
    return plan_catch_up(schedule, cursor, now, grace, policy)


def hour(number: int) -> datetime:
    return CURSOR + timedelta(hours=number)


def test_skip_fires_only_on_time_slot() -> None:
    result = plan(CatchUpPolicy.SKIP)

    assert result.fires == (PlannedFire(hour(5), missed=False),)
    assert result.missed == 5
    assert result.dropped == 0
    assert result.cursor == hour(6)


def test_fire_one_missed_fires_latest() -> None:
    result = plan(CatchUpPolicy.FIRE_ONE_MISSED)

    assert result.fires == (PlannedFire(hour(4), missed=True), PlannedFire(hour(5), missed=False))
    assert result.missed == 5
    assert result.dropped == 0


def test_fire_all_missed_fires_each_oldest_first() -> None:
    result = plan(CatchUpPolicy.FIRE_ALL_MISSED)

    assert [fire.slot for fire in result.fires] == [hour(number) for number in range(6)]
    assert [fire.missed for fire in result.fires] == [True] * 5 + [False]
    assert result.missed == 5
    assert result.dropped == 0


def test_zero_grace_makes_every_past_slot_missed() -> None:
    result = plan(CatchUpPolicy.SKIP, grace=timedelta(0))

    assert result.fires == ()
    assert result.missed == 6


def test_slot_at_now_on_time() -> None:
    result = plan(CatchUpPolicy.SKIP, now=hour(5), grace=timedelta(0))

    assert result.fires == (PlannedFire(hour(5), missed=False),)
    assert result.cursor == hour(6)


def test_slot_exactly_at_grace_edge_is_on_time() -> None:
    result = plan(CatchUpPolicy.SKIP, now=hour(5) + GRACE)

    assert result.fires == (PlannedFire(hour(5), missed=False),)


def test_slot_at_cursor_is_due() -> None:
    result = plan(CatchUpPolicy.FIRE_ALL_MISSED, now=hour(1) + timedelta(minutes=30))

    assert [fire.slot for fire in result.fires] == [hour(0), hour(1)]


def test_large_grace_fires_all_on_time() -> None:
    result = plan(CatchUpPolicy.SKIP, grace=timedelta(hours=6))

    assert [fire.slot for fire in result.fires] == [hour(number) for number in range(6)]
    assert not any(fire.missed for fire in result.fires)
    assert result.missed == 0


def test_nothing_due_before_cursor() -> None:
    cursor = utc("2024-05-01T10:30:00Z")

    result = plan(CatchUpPolicy.FIRE_ALL_MISSED, cursor=cursor, now=utc("2024-05-01T09:00:00Z"))

    assert result.fires == ()
    assert result.missed == 0
    assert result.cursor == utc("2024-05-01T11:00:00Z")


def test_no_slot_in_outage() -> None:
    daily = parse_schedule("cron", "0 12 * * *")

    result = plan(CatchUpPolicy.FIRE_ONE_MISSED, schedule=daily)

    assert result.fires == ()
    assert result.missed == 0
    assert result.cursor == utc("2024-05-01T12:00:00Z")


def test_cap_keeps_most_recent_and_counts_dropped() -> None:
    every_minute = parse_schedule("cron", "* * * * *")
    now = CURSOR + timedelta(days=2)

    result = plan(CatchUpPolicy.FIRE_ALL_MISSED, schedule=every_minute, now=now, grace=timedelta(0))

    slots = [fire.slot for fire in result.fires if fire.missed]
    assert len(slots) == MAX_CATCH_UP_FIRES
    assert result.missed == 2 * 1440
    assert result.dropped == 2 * 1440 - MAX_CATCH_UP_FIRES
    assert slots[0] == now - timedelta(minutes=MAX_CATCH_UP_FIRES)
    assert slots[-1] == now - timedelta(minutes=1)
    assert slots == sorted(slots)
    assert result.fires[-1] == PlannedFire(now, missed=False)


@pytest.mark.timeout(60)
def test_cap_over_year_of_seconds() -> None:
    every_second = parse_schedule("cron", "* * * * * *", "Europe/Berlin")
    cursor = utc("2023-06-01T00:00:00Z")
    now = utc("2024-06-01T00:00:00Z")

    result = plan(
        CatchUpPolicy.FIRE_ALL_MISSED, schedule=every_second, cursor=cursor, now=now, grace=GRACE
    )

    # A wildcard job follows elapsed time, so every second of the year is a slot even
    # though the spring change skips an hour of wall time and the autumn change repeats one.
    elapsed = int((now - cursor).total_seconds())
    assert result.missed == elapsed - 60
    assert result.dropped == result.missed - MAX_CATCH_UP_FIRES
    fires = [fire for fire in result.fires if fire.missed]
    assert len(fires) == MAX_CATCH_UP_FIRES
    assert fires[-1].slot == now - GRACE - timedelta(seconds=1)
    assert len([fire for fire in result.fires if not fire.missed]) == 61


def test_cap_for_interval_counts_by_arithmetic() -> None:
    schedule = parse_schedule("interval", "1s", "UTC", CURSOR)
    now = CURSOR + timedelta(days=3650)

    result = plan(CatchUpPolicy.FIRE_ALL_MISSED, schedule=schedule, now=now, grace=timedelta(0))

    assert result.missed == 3650 * 86400
    assert result.dropped == 3650 * 86400 - MAX_CATCH_UP_FIRES
    assert result.fires[-1] == PlannedFire(now, missed=False)


def test_outage_over_spring_forward() -> None:
    schedule = parse_schedule("cron", "30 2 * * *", "America/New_York")
    cursor = utc("2024-03-08T00:00:00Z")
    now = utc("2024-03-12T00:00:00Z")

    all_missed = plan(CatchUpPolicy.FIRE_ALL_MISSED, schedule=schedule, cursor=cursor, now=now)
    one_missed = plan(CatchUpPolicy.FIRE_ONE_MISSED, schedule=schedule, cursor=cursor, now=now)

    expected = [
        utc("2024-03-08T07:30:00Z"),
        utc("2024-03-09T07:30:00Z"),
        utc("2024-03-10T07:00:00Z"),
        utc("2024-03-11T06:30:00Z"),
    ]
    assert [fire.slot for fire in all_missed.fires] == expected
    assert all_missed.missed == 4
    assert [fire.slot for fire in one_missed.fires] == [expected[-1]]
    assert one_missed.cursor == utc("2024-03-12T06:30:00Z")


def test_outage_over_fall_back_wildcard() -> None:
    schedule = parse_schedule("cron", "*/30 * * * *", "Europe/Berlin")
    cursor = utc("2024-10-26T22:00:00Z")
    now = utc("2024-10-27T03:00:00Z")

    result = plan(
        CatchUpPolicy.FIRE_ALL_MISSED,
        schedule=schedule,
        cursor=cursor,
        now=now,
        grace=timedelta(0),
    )

    slots = [fire.slot for fire in result.fires]
    assert slots == [cursor + timedelta(minutes=30 * number) for number in range(11)]
    assert result.missed == 10


def test_one_shot_fired_leaves_no_cursor() -> None:
    schedule = parse_schedule("one_shot", "2024-05-01T02:00:00Z")

    result = plan(CatchUpPolicy.FIRE_ONE_MISSED, schedule=schedule)

    assert result.fires == (PlannedFire(utc("2024-05-01T02:00:00Z"), missed=True),)
    assert result.cursor is None


def test_solar_outage_fires_each_day() -> None:
    schedule = parse_schedule("solar", "sunrise 52.37 4.90", "Europe/Amsterdam")
    cursor = utc("2024-05-01T12:00:00Z")
    now = utc("2024-05-11T12:00:00Z")

    result = plan(CatchUpPolicy.FIRE_ALL_MISSED, schedule=schedule, cursor=cursor, now=now)

    assert [fire.slot for fire in result.fires] == next_slots(schedule, cursor, 10)
    assert result.missed == 10


def test_negative_grace_rejected() -> None:
    with pytest.raises(ScheduleError) as raised:
        plan(CatchUpPolicy.SKIP, grace=timedelta(seconds=-1))

    assert raised.value.field == "grace"


@pytest.mark.parametrize("text", ["skip", "fire_one_missed", "fire_all_missed"])
def test_policies_parse(text: str) -> None:
    assert parse_policy(text).value == text


@pytest.mark.parametrize("text", ["", "SKIP", "fire_all", "coalesce"])
def test_unknown_policy_rejected(text: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_policy(text)

    assert raised.value.field == "catch_up"
    assert raised.value.value == text
    assert "skip, fire_one_missed, fire_all_missed" in raised.value.reason


def test_naive_cursor_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cursor must be an aware datetime"):
        plan(CatchUpPolicy.SKIP, cursor=datetime(2024, 5, 1))
