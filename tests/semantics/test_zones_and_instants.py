"""Zone names, instant text, signed durations and the offset changes found by probing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.semantics.reference import offset_changes
from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import format_instant, parse_instant, parse_schedule, parse_zone
from z4j_scheduler.semantics.durations import parse_signed_duration
from z4j_scheduler.semantics.instants import from_seconds, to_seconds
from z4j_scheduler.semantics.offsets import ZoneOffsets


@pytest.mark.parametrize(
    "name", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Etc/UTC"]
)
def test_iana_names_accepted(name: str) -> None:
    assert parse_zone(name).key == name


@pytest.mark.parametrize(
    ("name", "wording"),
    [
        ("Mars/Olympus", "unknown time zone"),
        ("+02:00", "use an IANA Area/Location name"),
        ("EST", "use an IANA Area/Location name"),
        ("GMT", "use an IANA Area/Location name"),
        ("utc", "use an IANA Area/Location name"),
        ("", "use an IANA Area/Location name"),
        ("America", "use an IANA Area/Location name"),
        ("europe/berlin", "unknown time zone"),
        ("../etc/passwd", "unknown time zone"),
        ("/etc/localtime", "unknown time zone"),
        ("America/", "unknown time zone"),
    ],
)
def test_non_zones_rejected(name: str, wording: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_zone(name)

    assert raised.value.field == "timezone"
    assert raised.value.value == name
    assert wording in raised.value.reason
    assert str(raised.value).startswith(f"invalid timezone {name!r}: ")


def test_schedule_zone_validated() -> None:
    with pytest.raises(ScheduleError, match="invalid timezone 'Mars/Olympus'"):
        parse_schedule("cron", "0 0 * * *", "Mars/Olympus")


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("weekly", "0 0 * * *")

    assert raised.value.field == "kind"
    assert "cron, interval, one_shot, solar" in raised.value.reason


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-03-08T07:00:00Z", datetime(2026, 3, 8, 7, tzinfo=UTC)),
        ("2026-03-08T02:00:00-05:00", datetime(2026, 3, 8, 7, tzinfo=UTC)),
        ("2026-03-08T07:00:00.25+00:00", datetime(2026, 3, 8, 7, 0, 0, 250000, tzinfo=UTC)),
        ("2026-03-08 12:30+05:30", datetime(2026, 3, 8, 7, tzinfo=UTC)),
    ],
)
def test_instants_with_offsets_parse_to_utc(text: str, instant: datetime) -> None:
    parsed = parse_instant(text, "after")

    assert parsed == instant
    assert parsed.tzinfo is UTC


def test_naive_instant_needs_zone() -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_instant("2026-03-08T07:00:00", "after")

    assert str(raised.value) == (
        "invalid after '2026-03-08T07:00:00': needs a UTC offset or Z, e.g. 2026-03-08T07:00:00Z"
    )


def test_naive_instant_read_in_zone() -> None:
    parsed = parse_instant("2026-07-01T12:00", "start_at", ZoneInfo("Europe/Berlin"))

    assert parsed == datetime(2026, 7, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (datetime(2026, 3, 8, 7, tzinfo=UTC), "2026-03-08T07:00:00Z"),
        (datetime(2018, 12, 4, 15, 0, 0, 1000, tzinfo=UTC), "2018-12-04T15:00:00.001Z"),
        (datetime(2018, 12, 4, 15, 0, 0, 123456, tzinfo=UTC), "2018-12-04T15:00:00.123456Z"),
        (datetime(2026, 3, 8, 2, tzinfo=timezone(timedelta(hours=-5))), "2026-03-08T07:00:00Z"),
        (datetime(999, 1, 2, tzinfo=UTC), "0999-01-02T00:00:00Z"),
    ],
)
def test_format_instant(instant: datetime, text: str) -> None:
    assert format_instant(instant) == text


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_format_instant_round_trips(value: datetime) -> None:
    instant = value.replace(tzinfo=UTC)

    assert parse_instant(format_instant(instant), "instant") == instant


def test_naive_datetime_is_a_type_error() -> None:
    schedule = parse_schedule("cron", "0 0 * * *")

    with pytest.raises(TypeError, match="must be an aware datetime"):
        schedule.next_after(datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="must be an aware datetime"):
        format_instant(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("-30m", -1800), ("+900", 900), ("+1h", 3600), ("15m", 900), ("0", 0), ("-1h30m", -5400)],
)
def test_signed_durations(text: str, seconds: int) -> None:
    assert parse_signed_duration(text, "offset") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "-", "+-5", "--5", "5 m", "m5"])
def test_bad_signed_durations_rejected(text: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_signed_duration(text, "offset")

    assert raised.value.field == "offset"
    assert raised.value.value == text


@pytest.mark.parametrize(
    ("zone_name", "year"),
    [
        ("America/New_York", 2024),
        ("Europe/Berlin", 1996),
        ("Australia/Lord_Howe", 2024),
        ("America/Sao_Paulo", 2018),
        ("Pacific/Apia", 2011),
        ("Asia/Kolkata", 2024),
        ("Europe/Moscow", 2011),
        ("Africa/Casablanca", 2024),
    ],
)
def test_probed_changes_equal_hourly_scan(zone_name: str, year: int) -> None:
    zone = ZoneInfo(zone_name)
    offsets = ZoneOffsets(zone)
    start = to_seconds(datetime(year, 1, 1, tzinfo=UTC))
    end = to_seconds(datetime(year + 1, 1, 1, tzinfo=UTC))

    found = []
    instant = offsets.next_transition(start - 1, end - 1)
    while instant is not None:
        found.append(from_seconds(instant))
        instant = offsets.next_transition(instant, end - 1)

    assert found == offset_changes(zone, year)


@settings(max_examples=200, deadline=None)
@given(
    zone_name=st.sampled_from(["America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "UTC"]),
    instant=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_offset_lookup_equals_zoneinfo(zone_name: str, instant: datetime) -> None:
    zone = ZoneInfo(zone_name)
    aware = instant.replace(tzinfo=UTC, microsecond=0)

    offset = ZoneOffsets(zone).offset_at(to_seconds(aware))

    assert timedelta(seconds=offset) == aware.astimezone(zone).utcoffset()
