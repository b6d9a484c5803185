"""Cron schedules across offset changes: gaps, overlaps and date-line corrections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from z4j_scheduler.semantics import CronSchedule, next_slots, parse_instant, parse_schedule


def cron(expression: str, zone: str) -> CronSchedule:
    schedule = parse_schedule("cron", expression, zone)
    assert isinstance(schedule, CronSchedule)
    return schedule


def utc(text: str) -> datetime:
    return parse_instant(text, "expected")


def utc_list(*texts: str) -> list[datetime]:
    return [utc(text) for text in texts]


def slots_between(schedule: CronSchedule, start: str, end: str) -> list[datetime]:
    stop = utc(end)
    found = []
    for slot in schedule.slots_after(utc(start) - timedelta(microseconds=1)):
        if slot >= stop:
            break
        found.append(slot)
    return found


def test_spring_forward_wildcard_has_no_slots_in_gap() -> None:
    schedule = cron("*/15 * * * *", "America/New_York")

    found = slots_between(schedule, "2024-03-10T06:30:00Z", "2024-03-10T07:31:00Z")

    assert found == utc_list(
        "2024-03-10T06:30:00Z",
        "2024-03-10T06:45:00Z",
        "2024-03-10T07:00:00Z",
        "2024-03-10T07:15:00Z",
        "2024-03-10T07:30:00Z",
    )


def test_spring_forward_several_matches_in_gap_fire_once() -> None:
    schedule = cron("0,30 2 * * *", "America/New_York")

    found = next_slots(schedule, utc("2024-03-09T12:00:00Z"), 3)

    assert found == utc_list("2024-03-10T07:00:00Z", "2024-03-11T06:00:00Z", "2024-03-11T06:30:00Z")


def test_gap_and_change_instant_fire_once() -> None:
    schedule = cron("0 2,3 * * *", "America/New_York")

    found = next_slots(schedule, utc("2024-03-09T12:00:00Z"), 3)

    assert found == utc_list("2024-03-10T07:00:00Z", "2024-03-11T06:00:00Z", "2024-03-11T07:00:00Z")


def test_gap_slot_found_just_before_change() -> None:
    schedule = cron("30 2 * * *", "America/New_York")

    found = schedule.next_after(utc("2024-03-10T06:59:59.500000Z"))

    assert found == utc("2024-03-10T07:00:00Z")


def test_spring_forward_six_field_seconds_in_gap() -> None:
    schedule = cron("15 30 2 * * *", "Europe/Berlin")

    found = next_slots(schedule, utc("2024-03-30T12:00:00Z"), 2)

    assert found == utc_list("2024-03-31T01:00:00Z", "2024-04-01T00:30:15Z")


def test_fall_back_wildcard_fires_in_both_occurrences() -> None:
    schedule = cron("*/15 * * * *", "America/New_York")

    found = slots_between(schedule, "2024-11-03T05:00:00Z", "2024-11-03T07:01:00Z")

    assert found == [utc("2024-11-03T05:00:00Z") + timedelta(minutes=15 * n) for n in range(9)]


def test_fall_back_fixed_time_fires_first_occurrence_only() -> None:
    schedule = cron("0,30 1 * * *", "America/New_York")

    found = slots_between(schedule, "2024-11-03T00:00:00Z", "2024-11-04T12:00:00Z")

    assert found == utc_list(
        "2024-11-03T05:00:00Z",
        "2024-11-03T05:30:00Z",
        "2024-11-04T06:00:00Z",
        "2024-11-04T06:30:00Z",
    )


def test_fall_back_query_inside_second_occurrence() -> None:
    schedule = cron("30 1 * * *", "America/New_York")

    found = schedule.next_after(parse_instant("2024-11-03T01:10:00-05:00", "after"))

    assert found == utc("2024-11-04T06:30:00Z")


def test_fall_back_counts_match_enumeration() -> None:
    start, end = utc("2024-11-02T00:00:00Z"), utc("2024-11-05T00:00:00Z")
    for expression in ("*/15 * * * *", "0,30 1 * * *", "30 1 * * *"):
        schedule = cron(expression, "America/New_York")

        expected = len(slots_between(schedule, "2024-11-02T00:00:00Z", "2024-11-05T00:00:00Z"))

        assert schedule.count_between(start, end) == expected


def test_lord_howe_half_hour_overlap() -> None:
    # 2024-04-07 02:00 +11:00 becomes 01:30 +10:30, repeating 01:30-02:00.
    fixed = cron("45 1 * * *", "Australia/Lord_Howe")
    wildcard = cron("*/15 1 * * *", "Australia/Lord_Howe")
    after = utc("2024-04-06T12:00:00Z")

    assert next_slots(fixed, after, 2) == utc_list("2024-04-06T14:45:00Z", "2024-04-07T15:15:00Z")
    assert next_slots(wildcard, after, 6) == utc_list(
        "2024-04-06T14:00:00Z",
        "2024-04-06T14:15:00Z",
        "2024-04-06T14:30:00Z",
        "2024-04-06T14:45:00Z",
        "2024-04-06T15:00:00Z",
        "2024-04-06T15:15:00Z",
    )


def test_date_line_skip_is_not_made_up() -> None:
    # Pacific/Apia moved from -10:00 to +14:00 at the end of 2011-12-29, skipping 30 December.
    fixed = cron("0 12 * * *", "Pacific/Apia")
    wildcard = cron("0 * * * *", "Pacific/Apia")

    found = next_slots(fixed, utc("2011-12-28T12:00:00Z"), 3)
    hourly = slots_between(wildcard, "2011-12-30T09:00:00Z", "2011-12-30T12:00:00Z")

    assert found == utc_list("2011-12-28T22:00:00Z", "2011-12-29T22:00:00Z", "2011-12-30T22:00:00Z")
    assert [slot.astimezone(fixed.zone).day for slot in found] == [28, 29, 31]
    assert hourly == utc_list(
        "2011-12-30T09:00:00Z", "2011-12-30T10:00:00Z", "2011-12-30T11:00:00Z"
    )
    assert [slot.astimezone(fixed.zone).hour for slot in hourly] == [23, 0, 1]


def test_three_hour_forward_change_is_a_correction() -> None:
    # Antarctica/Casey went from +08:00 to +11:00 at 2009-10-17T18:00Z, skipping 02:00-05:00.
    schedule = cron("30 3 * * *", "Antarctica/Casey")

    found = next_slots(schedule, utc("2009-10-16T12:00:00Z"), 2)

    assert found == utc_list("2009-10-16T19:30:00Z", "2009-10-18T16:30:00Z")


def test_three_hour_backward_change_fires_every_occurrence() -> None:
    # Antarctica/Casey went from +11:00 to +08:00 at 2010-03-04T15:00Z, repeating 23:00-02:00.
    schedule = cron("30 0 * * *", "Antarctica/Casey")

    found = next_slots(schedule, utc("2010-03-04T00:00:00Z"), 3)

    assert found == utc_list("2010-03-04T13:30:00Z", "2010-03-04T16:30:00Z", "2010-03-05T16:30:00Z")


def test_repeated_day_fires_fixed_time_twice() -> None:
    # Pacific/Kwajalein went from +11:00 to -12:00 at 1969-09-30T13:00Z, repeating most of a day.
    schedule = cron("0 12 * * *", "Pacific/Kwajalein")

    found = next_slots(schedule, utc("1969-09-29T12:00:00Z"), 3)

    assert found == utc_list("1969-09-30T01:00:00Z", "1969-10-01T00:00:00Z", "1969-10-02T00:00:00Z")


def test_sao_paulo_midnight_gap_for_wildcard() -> None:
    schedule = cron("*/30 * * * *", "America/Sao_Paulo")

    found = slots_between(schedule, "2018-11-04T02:00:00Z", "2018-11-04T03:31:00Z")

    assert found == utc_list(
        "2018-11-04T02:00:00Z",
        "2018-11-04T02:30:00Z",
        "2018-11-04T03:00:00Z",
        "2018-11-04T03:30:00Z",
    )
    assert [slot.astimezone(schedule.zone).hour for slot in found] == [23, 23, 1, 1]


def test_zone_without_changes_is_plain_wall_clock() -> None:
    schedule = cron("30 9 * * *", "Asia/Kolkata")

    found = next_slots(schedule, utc("2024-03-09T00:00:00Z"), 3)

    assert found == utc_list("2024-03-09T04:00:00Z", "2024-03-10T04:00:00Z", "2024-03-11T04:00:00Z")


def test_fixed_offset_zone() -> None:
    schedule = cron("0 9 * * *", "Etc/GMT+5")

    assert next_slots(schedule, utc("2024-01-01T00:00:00Z"), 1) == utc_list("2024-01-01T14:00:00Z")


def test_previous_before_across_spring_forward() -> None:
    schedule = cron("30 2 * * *", "America/New_York")

    assert schedule.previous_before(utc("2024-03-10T07:00:00Z")) == utc("2024-03-09T07:30:00Z")
    assert schedule.previous_before(utc("2024-03-10T07:00:01Z")) == utc("2024-03-10T07:00:00Z")
    assert schedule.previous_before(utc("2024-03-11T06:30:01Z")) == utc("2024-03-11T06:30:00Z")


def test_slots_far_in_the_future() -> None:
    schedule = cron("0 0 1 1 *", "Europe/Berlin")

    found = next_slots(schedule, datetime(9997, 6, 1, tzinfo=UTC), 5)

    assert found == [datetime(9997, 12, 31, 23, tzinfo=UTC), datetime(9998, 12, 31, 23, tzinfo=UTC)]


def test_wildcard_always_in_gap_ends_search() -> None:
    # The 02:00 hour of the second Sunday of March never exists in New York since 2007.
    schedule = cron("* 2 * 3 0#2", "America/New_York")

    assert schedule.next_after(utc("2010-01-01T00:00:00Z")) is None
    assert schedule.previous_before(utc("2010-01-01T00:00:00Z")) == utc("2006-03-12T07:59:00Z")
    assert schedule.count_between(utc("2010-01-01T00:00:00Z"), utc("2030-01-01T00:00:00Z")) == 0


def test_datetime_range_edges() -> None:
    earliest = datetime.min.replace(tzinfo=UTC)
    latest = datetime.max.replace(tzinfo=UTC)
    new_york = cron("0 23 31 12 *", "America/New_York")
    far_east = cron("0 0 * * *", "Etc/GMT-14")

    assert new_york.next_after(datetime(9999, 12, 1, tzinfo=UTC)) is None
    assert new_york.previous_before(latest) == utc("9999-01-01T04:00:00Z")
    assert far_east.next_after(latest - timedelta(days=1)) is None
    assert cron("0 0 * * *", "Etc/GMT+5").next_after(earliest) == datetime(1, 1, 1, 5, tzinfo=UTC)
