"""Durations written as seconds (``600``) or whole units (``1d2h30m15s``).

Units are d (86400 s), h, m and s, each at most once and in that order. A day
is always 86400 seconds here, because durations measure elapsed time.
"""

from __future__ import annotations

import re
from datetime import timedelta

from z4j_scheduler.errors import ScheduleError

_UNITS = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (86400, 3600, 60, 1)
_SYNTAX_HINT = "write seconds (600) or whole units d, h, m, s in that order (1h30m)"


def parse_duration(text: str, field: str) -> timedelta:
    """Parse a positive duration of at least one second."""
    duration = _parse_unsigned(text.strip(), text, field)
    if duration < timedelta(seconds=1):
        raise ScheduleError(field, text, "must be at least 1 second")
    return duration


def parse_signed_duration(text: str, field: str) -> timedelta:
    """Parse a duration with an optional leading ``+`` or ``-``; zero is allowed."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    if body[:1] in ("+", "-"):
        body = body[1:]
    return sign * _parse_unsigned(body, text, field)


def _parse_unsigned(body: str, text: str, field: str) -> timedelta:
    if not body:
        raise ScheduleError(field, text, f"is empty; {_SYNTAX_HINT}")
    if body.isascii() and body.isdigit():
        return _seconds(int(body), text, field)
    match = _UNITS.fullmatch(body)
    if match is None:
        raise ScheduleError(field, text, f"is not a duration; {_SYNTAX_HINT}")
    total = sum(
        int(amount) * unit
        for amount, unit in zip(match.groups(), _UNIT_SECONDS, strict=True)
        if amount is not None
    )
    return _seconds(total, text, field)


def _seconds(total: int, text: str, field: str) -> timedelta:
    try:
        return timedelta(seconds=total)
    except OverflowError as error:
        raise ScheduleError(field, text, "is longer than 999999999 days") from error
