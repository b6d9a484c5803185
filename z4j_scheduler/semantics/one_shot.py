"""One-shot schedules: a single slot at an ISO-8601 instant.

An expression with an offset or ``Z`` is that instant. Without one it is a
wall time in the schedule's zone, rejected when the zone skips it or repeats
it. Sub-second precision is kept.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from z4j_scheduler.semantics.base import Schedule
from z4j_scheduler.semantics.instants import parse_instant, require_aware


class OneShotSchedule(Schedule):
    """The single slot ``instant``."""

    kind = "one_shot"

    def __init__(self, expression: str, zone: ZoneInfo) -> None:
        self.expression = expression
        self.zone = zone
        self.instant = parse_instant(expression, "expression", zone)

    def next_after(self, t: datetime) -> datetime | None:
        return self.instant if self.instant > require_aware(t, "t") else None

    def previous_before(self, t: datetime) -> datetime | None:
        return self.instant if self.instant < require_aware(t, "t") else None

    def count_between(self, start: datetime, end: datetime) -> int:
        inside = require_aware(start, "start") <= self.instant < require_aware(end, "end")
        return 1 if inside else 0
