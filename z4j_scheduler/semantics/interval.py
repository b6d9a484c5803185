"""Interval schedules: ``anchor + k * period`` for k >= 0, in elapsed time.

The zone only labels the schedule; offset changes never alter the spacing.
All arithmetic is on integer microseconds, so slots keep the anchor's fraction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics.base import Schedule
from z4j_scheduler.semantics.durations import parse_duration
from z4j_scheduler.semantics.instants import (
    from_microseconds,
    require_aware,
    to_microseconds,
)

_LAST_MICROSECOND = to_microseconds(datetime(9999, 12, 31, tzinfo=UTC))
_ONE_MICROSECOND = timedelta(microseconds=1)


class IntervalSchedule(Schedule):
    """Slots every ``period`` from ``anchor``; ``anchor`` itself is the first slot."""

    kind = "interval"

    def __init__(self, expression: str, zone: ZoneInfo, start_at: datetime | None) -> None:
        if start_at is None:
            raise ScheduleError(
                "start_at", None, "an interval schedule needs start_at, the anchor of its slots"
            )
        self.expression = expression
        self.zone = zone
        self.period = parse_duration(expression, "expression")
        self.anchor = require_aware(start_at, "start_at")
        self._anchor_us = to_microseconds(self.anchor)
        self._period_us = self.period // _ONE_MICROSECOND

    def next_after(self, t: datetime) -> datetime | None:
        return self._slot(self._slots_up_to(to_microseconds(require_aware(t, "t"))))

    def previous_before(self, t: datetime) -> datetime | None:
        return self._slot(self._slots_before(to_microseconds(require_aware(t, "t"))) - 1)

    def count_between(self, start: datetime, end: datetime) -> int:
        first = self._slots_before(to_microseconds(require_aware(start, "start")))
        stop = self._slots_before(to_microseconds(require_aware(end, "end")))
        return max(stop - first, 0)

    def last_slots(
        self, start: datetime, end: datetime, limit: int
    ) -> tuple[tuple[datetime, ...], int]:
        first = self._slots_before(to_microseconds(require_aware(start, "start")))
        stop = self._slots_before(to_microseconds(require_aware(end, "end")))
        total = max(stop - first, 0)
        indexes = range(max(first, stop - limit), stop)
        return tuple(self._anchor_plus(index) for index in indexes), total

    def _slots_up_to(self, microseconds: int) -> int:
        """Return how many slots lie at or before ``microseconds``, the index of the next one."""
        return self._slots_before(microseconds + 1)

    def _slots_before(self, microseconds: int) -> int:
        """Return how many slots lie strictly before ``microseconds``."""
        if microseconds <= self._anchor_us:
            return 0
        return (microseconds - self._anchor_us - 1) // self._period_us + 1

    def _slot(self, index: int) -> datetime | None:
        """Return slot number ``index``, or None before the anchor or past year 9999."""
        if index < 0:
            return None
        microseconds = self._anchor_us + index * self._period_us
        if microseconds > _LAST_MICROSECOND:
            return None
        return from_microseconds(microseconds)

    def _anchor_plus(self, index: int) -> datetime:
        return from_microseconds(self._anchor_us + index * self._period_us)
