"""Parsing, formatting and integer forms of aware instants.

Every instant this package returns is an aware datetime in UTC. Inputs may be
aware in any zone. A naive datetime passed to a function of this package is a
programming error and raises TypeError, because no zone can be guessed for it.
Naive *text* is user input, so it is read in a zone or rejected with ScheduleError.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from z4j_scheduler.errors import ScheduleError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_SECOND = timedelta(seconds=1)
ONE_MICROSECOND = timedelta(microseconds=1)


def require_aware(value: datetime, name: str) -> datetime:
    """Return ``value`` converted to UTC, raising TypeError if it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise TypeError(f"{name} must be an aware datetime, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def to_seconds(value: datetime) -> int:
    """Return the whole seconds since 1970-01-01T00:00Z, rounded down."""
    return (value - EPOCH) // ONE_SECOND


def to_seconds_ceil(value: datetime) -> int:
    """Return the whole seconds since 1970-01-01T00:00Z, rounded up."""
    return -((EPOCH - value) // ONE_SECOND)


def from_seconds(seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def to_microseconds(value: datetime) -> int:
    return (value - EPOCH) // ONE_MICROSECOND


def from_microseconds(microseconds: int) -> datetime:
    return EPOCH + timedelta(microseconds=microseconds)


def parse_instant(text: str, field: str, zone: ZoneInfo | None = None) -> datetime:
    """Parse ISO-8601 ``text`` into an aware UTC datetime.

    Text with an offset or ``Z`` means that instant. Naive text is read as a
    wall time in ``zone`` and rejected when the wall time does not exist there
    or occurs twice. Naive text with ``zone=None`` is rejected. Errors are
    ScheduleError naming ``field``.
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise ScheduleError(
            field, text, "not an ISO-8601 instant, e.g. 2026-03-08T07:00:00Z"
        ) from error
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    if zone is None:
        raise ScheduleError(field, text, "needs a UTC offset or Z, e.g. 2026-03-08T07:00:00Z")
    return _read_wall_time(parsed, text, field, zone)


def _read_wall_time(wall: datetime, text: str, field: str, zone: ZoneInfo) -> datetime:
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(UTC)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        reason = f"that wall time does not exist in {zone.key} (skipped by a clock change)"
    else:
        reason = f"that wall time occurs twice in {zone.key} (repeated by a clock change)"
    raise ScheduleError(field, text, f"{reason}; add a UTC offset to say which instant")


def format_instant(value: datetime) -> str:
    """Format an aware datetime as UTC ISO-8601 with a ``Z`` suffix.

    Whole seconds print without a fraction; otherwise the microseconds are
    printed without trailing zeros, which ``parse_instant`` reads back exactly.
    """
    utc = require_aware(value, "instant")
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"
