"""Solar schedules: parsing, the sun's elevation at each slot, local days and the poles."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from astral import Observer
from astral.sun import elevation

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import SolarSchedule, next_slots, parse_schedule

AMSTERDAM = "52.3676 4.9041"
AFTER = datetime(2024, 3, 20, tzinfo=UTC)


def solar(expression: str, zone: str = "UTC") -> SolarSchedule:
    schedule = parse_schedule("solar", expression, zone)
    assert isinstance(schedule, SolarSchedule)
    return schedule


def sun_elevation(schedule: SolarSchedule, instant: datetime) -> float:
    observer = Observer(schedule.latitude, schedule.longitude, 0.0)
    return float(elevation(observer, instant, with_refraction=False))


@pytest.mark.parametrize(
    ("event", "degrees"),
    [
        ("sunrise", -50 / 60),
        ("sunset", -50 / 60),
        ("dawn", -6.0),
        ("dusk", -6.0),
        ("dawn_nautical", -12.0),
        ("dusk_nautical", -12.0),
        ("dawn_astronomical", -18.0),
        ("dusk_astronomical", -18.0),
    ],
)
def test_event_slots_put_sun_at_its_elevation(event: str, degrees: float) -> None:
    schedule = solar(f"{event} {AMSTERDAM}", "Europe/Amsterdam")

    for slot in next_slots(schedule, AFTER, 3):
        # Within a minute of the true instant, the sun moves less than 0.25 degrees here.
        assert abs(sun_elevation(schedule, slot) - degrees) < 0.25


def test_rising_and_setting_events_in_order() -> None:
    events = ["dawn_astronomical", "dawn_nautical", "dawn", "sunrise", "noon"]
    events += ["sunset", "dusk", "dusk_nautical", "dusk_astronomical"]
    day_start = datetime(2024, 3, 20, tzinfo=UTC)

    slots = [next_slots(solar(f"{event} {AMSTERDAM}"), day_start, 1)[0] for event in events]

    assert slots == sorted(slots)
    assert all(slot.date() == date(2024, 3, 20) for slot in slots)


def test_noon_is_highest_sun() -> None:
    schedule = solar(f"noon {AMSTERDAM}")
    slot = next_slots(schedule, AFTER, 1)[0]

    highest = sun_elevation(schedule, slot)

    assert highest > sun_elevation(schedule, slot - timedelta(minutes=10))
    assert highest > sun_elevation(schedule, slot + timedelta(minutes=10))


def test_offset_shifts_every_slot() -> None:
    plain = next_slots(solar(f"sunset {AMSTERDAM}"), AFTER, 3)
    early = next_slots(solar(f"sunset {AMSTERDAM} -15m"), AFTER, 3)
    late = next_slots(solar(f"sunset {AMSTERDAM} +900"), AFTER, 3)

    assert early == [slot - timedelta(minutes=15) for slot in plain]
    assert late == [slot + timedelta(minutes=15) for slot in plain]


def test_one_slot_per_local_day() -> None:
    schedule = solar("sunrise 1.87 -157.4", "Pacific/Kiritimati")

    slots = next_slots(schedule, AFTER, 20)
    days = [slot.astimezone(schedule.zone).date() for slot in slots]

    assert days == [days[0] + timedelta(days=number) for number in range(20)]


def test_slots_are_whole_seconds() -> None:
    assert all(slot.microsecond == 0 for slot in next_slots(solar(f"dusk {AMSTERDAM}"), AFTER, 5))


def test_polar_night_skipped_until_sunrise() -> None:
    schedule = solar("sunrise 78.22 15.65", "Arctic/Longyearbyen")

    first = next_slots(schedule, datetime(2024, 11, 15, tzinfo=UTC), 1)[0]

    assert date(2025, 2, 1) < first.date() < date(2025, 3, 15)


def test_midnight_sun_skipped_until_sunset() -> None:
    schedule = solar("sunset 78.22 15.65", "Arctic/Longyearbyen")

    first = next_slots(schedule, datetime(2024, 5, 1, tzinfo=UTC), 1)[0]

    assert date(2024, 8, 10) < first.date() < date(2024, 9, 10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("expression", ["sunrise 90 0", "sunset -90 0", "dusk_astronomical 90 0"])
def test_poles_end_without_looping(expression: str) -> None:
    schedule = solar(expression)
    start = datetime(2024, 1, 1, tzinfo=UTC)

    slots = next_slots(schedule, start, 4)
    before = schedule.previous_before(start)

    assert all(slot > start for slot in slots)
    assert all(earlier < later for earlier, later in itertools.pairwise(slots))
    assert before is None or before < start


def test_previous_before_agrees_with_next_after() -> None:
    schedule = solar(f"sunset {AMSTERDAM}", "Europe/Amsterdam")
    slots = next_slots(schedule, AFTER, 5)

    for earlier, later in itertools.pairwise(slots):
        assert schedule.previous_before(later) == earlier
        assert schedule.next_after(earlier) == later


def test_counts_and_last_slots_by_day() -> None:
    schedule = solar(f"sunrise {AMSTERDAM}", "Europe/Amsterdam")
    end = AFTER + timedelta(days=30)

    slots, total = schedule.last_slots(AFTER, end, 5)

    assert total == schedule.count_between(AFTER, end) == 30
    assert slots == tuple(next_slots(schedule, AFTER, 30)[-5:])


@pytest.mark.parametrize(
    ("expression", "wording"),
    [
        ("sunrise 52", "expected EVENT LATITUDE LONGITUDE [OFFSET]"),
        ("sunrise 52 4 -15m extra", "expected EVENT LATITUDE LONGITUDE [OFFSET]"),
        ("moonrise 52 4", "unknown event 'moonrise'; use one of dawn_astronomical"),
        ("sunrise 95 4", "latitude 95 is out of range -90 to 90"),
        ("sunrise 52 -181", "longitude -181 is out of range -180 to 180"),
        ("sunrise nan 4", "latitude nan is out of range"),
        ("sunrise north 4", "latitude 'north' is not a number of degrees"),
        ("sunrise 52 4 -15x", "offset '-15x' is not a duration"),
        ("sunrise 52 4 +1d", "offset '+1d' must be shorter than 1 day"),
    ],
)
def test_bad_solar_expressions_rejected(expression: str, wording: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("solar", expression, "UTC")

    assert raised.value.field == "expression"
    assert raised.value.value == expression
    assert wording in raised.value.reason
