"""Cron schedules on the wall clock of a zone, with cronie's rules for offset changes.

A job is fixed-time when neither its minute nor its hour field starts with
``*``; otherwise it is a wildcard job. Between offset changes, slots are the
matching wall times. At a change from offset ``before`` to ``after``:

- Gap (``after > before``, under 3 hours): a fixed-time job with any matching
  wall time in the skipped interval fires once, at the change. A wildcard job
  has no slots there.
- Overlap (``after < before``, under 3 hours): a fixed-time job fires only in
  the first occurrence of the repeated interval. A wildcard job fires in
  both, following elapsed time.
- A change of 3 hours or more is a correction, such as Pacific/Apia crossing
  the date line on 2011-12-30: skipped wall times are not made up, and both
  kinds fire in every occurrence of a repeated wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics.base import Schedule, last_slots_by_counting
from z4j_scheduler.semantics.cron_matcher import WallClockMatcher
from z4j_scheduler.semantics.cron_parser import parse_cron
from z4j_scheduler.semantics.instants import (
    from_seconds,
    require_aware,
    to_seconds,
    to_seconds_ceil,
)
from z4j_scheduler.semantics.offsets import Transition, ZoneOffsets

CORRECTION_SECONDS = 3 * 3600
_LAST_SECOND = to_seconds(datetime.max.replace(tzinfo=UTC))
# Wall-clock matches of a valid expression are at most about 40 years apart
# (a weekday-bound 29 February). NOTE: a wildcard job whose every match falls
# into a recurring gap never fires; the search gives up after this horizon.
_SEARCH_HORIZON_SECONDS = 100 * 366 * 86400


class CronSchedule(Schedule):
    """A parsed cron expression evaluated in ``zone``."""

    kind = "cron"

    def __init__(self, expression: str, zone: ZoneInfo) -> None:
        fields = parse_cron(expression)
        self.expression = expression
        self.zone = zone
        self.fixed_time = fields.fixed_time
        self._matcher = WallClockMatcher(fields)
        months = self._matcher.never_matching_months()
        if months is not None:
            raise ScheduleError(
                "expression",
                expression,
                f"never matches: no day in {', '.join(months)} satisfies the day fields",
            )
        self._offsets = ZoneOffsets(zone)

    def matches(self, wall: datetime) -> bool:
        """Return whether a naive wall-clock datetime matches the expression."""
        return self._matcher.matches(wall)

    def next_after(self, t: datetime) -> datetime | None:
        found = self._first_slot_from(to_seconds(require_aware(t, "t")) + 1)
        return None if found is None else from_seconds(found)

    def slots_after(self, t: datetime) -> Iterator[datetime]:
        found = self._first_slot_from(to_seconds(require_aware(t, "t")) + 1)
        while found is not None:
            yield from_seconds(found)
            found = self._first_slot_from(found + 1)

    def count_between(self, start: datetime, end: datetime) -> int:
        first = to_seconds_ceil(require_aware(start, "start"))
        stop = to_seconds_ceil(require_aware(end, "end"))
        fixed = self._offsets.fixed
        if fixed is not None:
            return self._matcher.count_matches(first + fixed, stop + fixed)
        return self._count_with_transitions(first, stop)

    def last_slots(
        self, start: datetime, end: datetime, limit: int
    ) -> tuple[tuple[datetime, ...], int]:
        return last_slots_by_counting(self, start, end, limit)

    def _first_slot_from(self, start: int) -> int | None:
        """Return the first slot at or after ``start`` (integer seconds), or None past year 9999."""
        fixed = self._offsets.fixed
        if fixed is not None:
            match = self._matcher.next_match(start + fixed)
            found = None if match is None else match - fixed
        else:
            found = self._first_slot_with_transitions(start)
        return None if found is None or found > _LAST_SECOND else found

    def _first_slot_with_transitions(self, start: int) -> int | None:
        # Each pass searches the segment of constant offset that contains start.
        # A candidate past the segment's end is dropped and the next pass starts
        # at the change, where a gap may itself be the slot.
        offsets = self._offsets
        give_up = start + _SEARCH_HORIZON_SECONDS
        while start < give_up:
            transition = offsets.transition_at(start)
            if transition is not None and self._fires_in_gap(transition):
                return start
            offset = offsets.offset_at(start)
            match = self._matcher.next_match(self._first_wall(start, offset))
            if match is None:
                return None
            candidate = match - offset
            crossing = offsets.next_transition(start, candidate)
            if crossing is None:
                return candidate
            start = crossing
        return None

    def _count_with_transitions(self, start: int, stop: int) -> int:
        """Count slots in [start, stop) segment by segment, mirroring the search above."""
        offsets = self._offsets
        total = 0
        while start < stop:
            transition = offsets.transition_at(start)
            if transition is not None and self._fires_in_gap(transition):
                total += 1
                start += 1
                continue
            offset = offsets.offset_at(start)
            crossing = offsets.next_transition(start, stop - 1)
            segment_end = stop if crossing is None else crossing
            total += self._matcher.count_matches(
                self._first_wall(start, offset), segment_end + offset
            )
            start = segment_end
        return total

    def _first_wall(self, start: int, offset: int) -> int:
        """Return the first wall second a slot at or after ``start`` may have.

        After a fall-back change under 3 hours, a fixed-time job skips the wall
        times of the repeated interval, which it already had before the change.
        """
        wall = start + offset
        if not self.fixed_time:
            return wall
        recent = self._offsets.last_transition(start, start - CORRECTION_SECONDS)
        if recent is not None and 0 < recent.before - recent.after < CORRECTION_SECONDS:
            return max(wall, recent.at + recent.before)
        return wall

    def _fires_in_gap(self, transition: Transition) -> bool:
        """Return whether a fixed-time job fires at a spring-forward change under 3 hours."""
        jump = transition.after - transition.before
        if not self.fixed_time or not 0 < jump < CORRECTION_SECONDS:
            return False
        gap_start = transition.at + transition.before
        match = self._matcher.next_match(gap_start)
        return match is not None and match < gap_start + jump
