"""Cron syntax: what is accepted, what each field means, and the wording of rejections."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import CronSchedule, next_slots, parse_schedule

START = datetime(2024, 1, 1, tzinfo=UTC)


def cron(expression: str, zone: str = "UTC") -> CronSchedule:
    schedule = parse_schedule("cron", expression, zone)
    assert isinstance(schedule, CronSchedule)
    return schedule


def slots(expression: str, count: int = 10, after: datetime = START) -> list[datetime]:
    return next_slots(cron(expression), after, count)


def rejection(expression: str) -> ScheduleError:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("cron", expression, "UTC")
    assert raised.value.field == "expression"
    assert raised.value.value == expression
    return raised.value


def test_out_of_range_message_names_field_and_value() -> None:
    error = rejection("61 * * * *")

    assert str(error) == "invalid expression '61 * * * *': minute 61 is out of range 0-59"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month 32 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 * 0 *", "month 0 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
        ("60 0 0 * * *", "second 60 is out of range 0-59"),
        ("0 0-24 * * *", "hour 24 is out of range 0-23"),
    ],
)
def test_out_of_range_values_rejected(expression: str, reason: str) -> None:
    assert rejection(expression).reason == reason


@pytest.mark.parametrize(
    ("expression", "wording"),
    [
        ("*/0 * * * *", "minute step 0 is out of range 1-60"),
        ("*/-5 * * * *", "minute step '-5' is not a whole number"),
        ("*/x * * * *", "minute step 'x' is not a whole number"),
        ("0 */25 * * *", "hour step 25 is out of range 1-24"),
        ("*/5/2 * * * *", "minute step '5/2'"),
    ],
)
def test_bad_steps_rejected(expression: str, wording: str) -> None:
    assert wording in rejection(expression).reason


@pytest.mark.parametrize(
    ("expression", "wording"),
    [
        ("0 5-2 * * *", "hour range 5-2 is reversed"),
        ("0 0 * dec-jan *", "month range dec-jan is reversed"),
        ("0 0 * * fri-mon", "day-of-week range fri-mon is reversed"),
        ("-5 * * * *", "minute range '-5' needs a value on each side"),
    ],
)
def test_reversed_and_open_ranges_rejected(expression: str, wording: str) -> None:
    assert wording in rejection(expression).reason


@pytest.mark.parametrize(
    ("expression", "wording"),
    [
        ("0 0 * foo *", "month name 'foo' is unknown; use jan-dec"),
        ("0 0 * * funday", "day-of-week name 'funday' is unknown; use sun-sat or 0-7"),
        ("0 0 abc * *", "day-of-month value 'abc' is not a number in 1-31"),
        ("H * * * *", "minute value 'H' is not a number in 0-59"),
        ("0 0 * * mon-xyz", "day-of-week name 'xyz' is unknown"),
    ],
)
def test_unknown_names_rejected(expression: str, wording: str) -> None:
    assert wording in rejection(expression).reason


@pytest.mark.parametrize("expression", ["* * * *", "0 0 0 * * * 2024", "0", "* * * * * * *"])
def test_wrong_field_count_rejected(expression: str) -> None:
    fields = len(expression.split())

    reason = rejection(expression).reason

    assert reason.startswith("expected 5 fields")
    assert reason.endswith(f"got {fields}")


def test_empty_list_item_rejected() -> None:
    assert "empty list item" in rejection("1,,2 * * * *").reason


def test_question_mark_needs_six_fields() -> None:
    reason = rejection("0 0 ? * 1").reason

    assert "only for six-field expressions" in reason
    assert "day-of-month" in reason


def test_question_mark_outside_day_fields_rejected() -> None:
    assert "allowed only alone, in day-of-month or day-of-week" in rejection("0 ? 0 * * *").reason


def test_question_mark_means_star_in_six_fields() -> None:
    assert slots("0 30 2 ? * *", 3) == slots("0 30 2 * * *", 3)
    assert slots("0 0 12 1 * ?", 3) == slots("0 0 12 1 * *", 3)


def test_six_fields_put_seconds_first() -> None:
    assert slots("15 30 2 * * *", 2) == [
        datetime(2024, 1, 1, 2, 30, 15, tzinfo=UTC),
        datetime(2024, 1, 2, 2, 30, 15, tzinfo=UTC),
    ]


def test_every_second_six_fields() -> None:
    found = slots("* * * * * *", 3, after=datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC))

    assert [slot.second for slot in found] == [1, 2, 3]


def test_reboot_rejected_with_reason() -> None:
    reason = rejection("@reboot").reason

    assert "@reboot is not supported" in reason
    assert "no boot" in reason


def test_unknown_alias_rejected() -> None:
    assert "unknown alias @fortnightly" in rejection("@fortnightly").reason


@pytest.mark.parametrize(
    ("alias", "expression"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_aliases_expand(alias: str, expression: str) -> None:
    assert slots(alias, 5) == slots(expression, 5)


@pytest.mark.parametrize(
    ("expression", "fixed"),
    [
        ("30 2 * * *", True),
        ("0 9,17 * * 1-5", True),
        ("@daily", True),
        ("0 30 2 * * *", True),
        ("*/15 * * * *", False),
        ("30 * * * *", False),
        ("0 */2 * * *", False),
        ("* 2 * * *", False),
        ("@hourly", False),
    ],
)
def test_fixed_time_classification(expression: str, fixed: bool) -> None:
    assert cron(expression).fixed_time is fixed


def test_step_counts_from_range_start() -> None:
    days = [slot.day for slot in slots("0 0 */7 * *", 6, after=datetime(2023, 12, 31, tzinfo=UTC))]

    assert days == [1, 8, 15, 22, 29, 1]


def test_range_with_step() -> None:
    minutes = [slot.minute for slot in slots("5-59/15 * * * *", 4)]

    assert minutes == [5, 20, 35, 50]


def test_single_value_with_step_runs_to_field_end() -> None:
    hours = [slot.hour for slot in slots("0 20/2 * * *", 3)]

    assert hours == [20, 22, 20]


def test_sunday_is_zero_and_seven() -> None:
    assert slots("0 0 * * 7", 5) == slots("0 0 * * 0", 5)
    assert all(slot.isoweekday() == 7 for slot in slots("0 0 * * 7", 5))


def test_names_are_case_insensitive() -> None:
    found = slots("0 0 * JAN-mar Mon-FRI", 40)

    assert all(slot.month <= 3 and slot.isoweekday() <= 5 for slot in found)
    assert slots("0 0 * jan-mar 1-5", 40) == found


def test_restricted_day_fields_match_either() -> None:
    found = slots("0 0 13 * 5", 8)

    assert all(slot.day == 13 or slot.isoweekday() == 5 for slot in found)
    assert any(slot.day == 13 and slot.isoweekday() != 5 for slot in found)
    assert any(slot.day != 13 and slot.isoweekday() == 5 for slot in found)


def test_star_step_day_field_requires_both() -> None:
    found = slots("0 0 */20 * 1", 4, after=datetime(2020, 1, 1, tzinfo=UTC))

    assert all(slot.day in (1, 21) and slot.isoweekday() == 1 for slot in found)


def test_star_weekday_keeps_month_day_only() -> None:
    assert [slot.day for slot in slots("0 0 15 * *", 3)] == [15, 15, 15]


@pytest.mark.parametrize(
    "expression",
    ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2,4 *", "0 0 30W 2 *", "0 0 */31 2 1#5"],
)
@pytest.mark.timeout(30)
def test_never_matching_expressions_rejected(expression: str) -> None:
    reason = rejection(expression).reason

    assert reason.startswith("never matches")


def test_never_matching_reason_names_months() -> None:
    assert "apr, jun, sep, nov" in rejection("0 0 31 4,6,9,11 *").reason


def test_rare_but_possible_expression_accepted() -> None:
    found = slots("0 0 * 2 1#5", 3, after=datetime(2000, 1, 1, tzinfo=UTC))

    assert [slot.date() for slot in found] == [
        date(2016, 2, 29),
        date(2044, 2, 29),
        date(2072, 2, 29),
    ]


def test_leap_day_or_weekday_accepted() -> None:
    found = slots("0 0 29 2 1", 6, after=datetime(2023, 1, 1, tzinfo=UTC))

    assert all(slot.month == 2 for slot in found)
    assert all(slot.day == 29 or slot.isoweekday() == 1 for slot in found)


@pytest.mark.parametrize(
    ("expression", "wording"),
    [
        ("0 0 L-2 * *", "day-of-month 'L-2' is not supported"),
        ("0 0 W * *", "day-of-month 'W' is not supported"),
        ("0 0 * * L", "day-of-week 'L' is not supported"),
        ("0 0 * * 5#6", "occurrence 6 is out of range 1-5"),
        ("0 0 * * 5#0", "occurrence 0 is out of range 1-5"),
        ("0 0 * * 9#2", "day-of-week 9 is out of range 0-7"),
        ("0 0 32W * *", "day-of-month 32 is out of range 1-31"),
    ],
)
def test_unsupported_extensions_rejected(expression: str, wording: str) -> None:
    assert wording in rejection(expression).reason


def test_last_day_and_list_combine() -> None:
    found = slots("0 0 1,15,L * *", 6)

    assert [slot.date() for slot in found] == [
        date(2024, 1, 15),
        date(2024, 1, 31),
        date(2024, 2, 1),
        date(2024, 2, 15),
        date(2024, 2, 29),
        date(2024, 3, 1),
    ]


def test_nearest_weekday_stays_in_month() -> None:
    # 2022-10-01 is a Saturday, so 1W is Monday the 3rd, not Friday 30 September.
    first = slots("0 0 1W * *", 1, after=datetime(2022, 9, 15, tzinfo=UTC))
    # 2022-07-31 is a Sunday at month end, so 31W is Friday the 29th.
    last = slots("0 0 31W * *", 1, after=datetime(2022, 7, 15, tzinfo=UTC))

    assert first == [datetime(2022, 10, 3, tzinfo=UTC)]
    assert last == [datetime(2022, 7, 29, tzinfo=UTC)]


def test_nearest_weekday_skips_months_without_the_day() -> None:
    found = slots("0 0 31W * *", 4, after=datetime(2023, 1, 31, tzinfo=UTC))

    assert [(slot.month, slot.day) for slot in found] == [(3, 31), (5, 31), (7, 31), (8, 31)]


def test_last_weekday_of_month() -> None:
    # 2024-03-31 is a Sunday, so LW is Friday the 29th.
    assert slots("0 0 LW * *", 1, after=datetime(2024, 3, 1, tzinfo=UTC)) == [
        datetime(2024, 3, 29, tzinfo=UTC)
    ]


def test_weekday_names_with_hash_and_last() -> None:
    assert slots("0 0 * * FRI#2", 3) == slots("0 0 * * 5#2", 3)
    assert slots("0 0 * * friL", 3) == slots("0 0 * * 5L", 3)


def test_overlong_expression_rejected() -> None:
    expression = ",".join(["1"] * 600) + " * * * *"

    assert "longer than 1000 characters" in rejection(expression).reason
