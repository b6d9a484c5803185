"""The interface every parsed schedule implements, with generic algorithms.

A schedule is a set of slots: aware instants, returned in UTC. Subclasses
implement ``next_after``. The other queries have generic versions built on it,
which subclasses replace when they can compute the result faster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import ClassVar
from zoneinfo import ZoneInfo

from z4j_scheduler.semantics.instants import (
    from_microseconds,
    require_aware,
    to_microseconds,
)

_FIRST_MICROSECOND = to_microseconds(datetime(1, 1, 2, tzinfo=UTC))
_ONE_SECOND_US = 1_000_000


class Schedule(ABC):
    """A parsed schedule with its ``kind``, ``expression`` and ``zone``.

    The methods query its slots. Instants passed in must be aware, and a naive
    one raises TypeError. Instants returned are aware UTC datetimes.
    """

    kind: ClassVar[str]
    expression: str
    zone: ZoneInfo

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.expression!r}, zone={self.zone.key!r})"

    @abstractmethod
    def next_after(self, t: datetime) -> datetime | None:
        """Return the first slot strictly after ``t``, or None when no slot follows."""

    def slots_after(self, t: datetime) -> Iterator[datetime]:
        """Yield the slots strictly after ``t`` in increasing order, lazily."""
        current = self.next_after(t)
        while current is not None:
            yield current
            current = self.next_after(current)

    def previous_before(self, t: datetime) -> datetime | None:
        """Return the last slot strictly before ``t``, or None when there is none.

        The generic version widens a window back from ``t`` until it contains a
        slot, then bisects it, so it costs about 2 * log2(gap in microseconds)
        calls of ``next_after`` whatever the schedule's frequency.
        """
        end = to_microseconds(require_aware(t, "t"))
        window = self._window_with_slot(end)
        if window is None:
            return None
        low, latest = window
        high = end
        while high - low > 1:
            middle = (low + high) // 2
            found = self._first_at_or_after(middle)
            if found is not None and found < end:
                low, latest = middle, found
            else:
                high = middle
        return from_microseconds(latest)

    def count_between(self, start: datetime, end: datetime) -> int:
        """Return how many slots lie in [start, end).

        NOTE: the generic version enumerates the slots; schedules with many
        slots per day replace it with arithmetic.
        """
        stop = require_aware(end, "end")
        count = 0
        for slot in self.slots_after(_just_before(start)):
            if slot >= stop:
                break
            count += 1
        return count

    def last_slots(
        self, start: datetime, end: datetime, limit: int
    ) -> tuple[tuple[datetime, ...], int]:
        """Return the last ``limit`` slots in [start, end), oldest first, and the count of all.

        NOTE: the generic version enumerates every slot in the range once;
        schedules with many slots per day use ``last_slots_by_counting``.
        """
        stop = require_aware(end, "end")
        recent_slots: deque[datetime] = deque(maxlen=limit)
        count = 0
        for slot in self.slots_after(_just_before(start)):
            if slot >= stop:
                break
            recent_slots.append(slot)
            count += 1
        return tuple(recent_slots), count

    def _first_at_or_after(self, microseconds: int) -> int | None:
        found = self.next_after(from_microseconds(microseconds - 1))
        return None if found is None else to_microseconds(found)

    def _window_with_slot(self, end: int) -> tuple[int, int] | None:
        """Return ``(low, slot)`` with the first slot at or after ``low`` before ``end``."""
        width = _ONE_SECOND_US
        while True:
            low = max(end - width, _FIRST_MICROSECOND)
            found = self._first_at_or_after(low)
            if found is not None and found < end:
                return low, found
            if low == _FIRST_MICROSECOND:
                return None
            width *= 2


def last_slots_by_counting(
    schedule: Schedule, start: datetime, end: datetime, limit: int
) -> tuple[tuple[datetime, ...], int]:
    """Implement ``Schedule.last_slots`` with ``count_between`` and bisection.

    Costs about log2(range in microseconds) counts plus ``limit`` calls of
    ``next_after``, instead of one call per slot in the range.
    """
    total = schedule.count_between(start, end)
    if total <= limit:
        first = start
    else:
        first = from_microseconds(_start_of_last(schedule, start, end, limit))
    slots = tuple(islice(schedule.slots_after(_just_before(first)), min(total, limit)))
    return slots, total


def _start_of_last(schedule: Schedule, start: datetime, end: datetime, limit: int) -> int:
    """Return the latest instant from which [instant, end) still contains ``limit`` slots."""
    low, high = to_microseconds(require_aware(start, "start")), to_microseconds(end)
    while high - low > 1:
        middle = (low + high) // 2
        if schedule.count_between(from_microseconds(middle), end) >= limit:
            low = middle
        else:
            high = middle
    return low


def _just_before(value: datetime) -> datetime:
    return from_microseconds(to_microseconds(require_aware(value, "start")) - 1)


def next_slots(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """Return the first ``count`` slots strictly after ``after`` (fewer if the schedule ends)."""
    if count < 0:
        raise ValueError(f"count must be zero or positive, got {count}")
    return list(islice(schedule.slots_after(after), count))
