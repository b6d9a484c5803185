"""Building a Schedule from its stored kind, expression, zone and anchor."""

from __future__ import annotations

from datetime import datetime

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics.base import Schedule
from z4j_scheduler.semantics.cron import CronSchedule
from z4j_scheduler.semantics.interval import IntervalSchedule
from z4j_scheduler.semantics.one_shot import OneShotSchedule
from z4j_scheduler.semantics.solar import SolarSchedule
from z4j_scheduler.semantics.zones import parse_zone

KINDS = ("cron", "interval", "one_shot", "solar")


def parse_schedule(
    kind: str, expression: str, timezone: str = "UTC", start_at: datetime | None = None
) -> Schedule:
    """Parse and validate a schedule, raising ScheduleError naming the bad field.

    ``start_at`` is the anchor of an interval schedule and is required for
    that kind; the other kinds ignore it. A naive ``start_at`` raises TypeError.
    """
    if kind not in KINDS:
        raise ScheduleError("kind", kind, f"unknown kind; use one of {', '.join(KINDS)}")
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError("expression", expression, f"a {kind} schedule needs an expression")
    zone = parse_zone(timezone)
    if kind == "cron":
        return CronSchedule(expression, zone)
    if kind == "interval":
        return IntervalSchedule(expression, zone, start_at)
    if kind == "one_shot":
        return OneShotSchedule(expression, zone)
    return SolarSchedule(expression, zone)
