"""UTC offset changes of a zone, found by probing ``utcoffset()``.

``zoneinfo`` has no public list of transitions, so each UTC calendar year is
probed once a day and every change of offset is bisected to the second. Two
changes within one probe step would go unseen; in the 2026 tz database the
shortest time between two offset changes of any zone is about seven days.
Results are cached per (zone, year). Instants are integer seconds since
1970-01-01T00:00Z and offsets are integer seconds east of UTC.
"""

from __future__ import annotations

import functools
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from z4j_scheduler.semantics.zones import is_fixed_offset

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PROBE_STEP = 86400
_LAST_ORDINAL = date.max.toordinal()
# Probes stay a day inside datetime's range, so converting to any zone never
# overflows; instants beyond these bounds use the offset at the bound.
FIRST_SECOND = (date(1, 1, 2).toordinal() - EPOCH_ORDINAL) * 86400
LAST_SECOND = (date(9999, 12, 30).toordinal() - EPOCH_ORDINAL) * 86400


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of UTC offset: ``before`` applies up to ``at - 1``, ``after`` from ``at``."""

    at: int
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class _YearOffsets:
    first_offset: int
    instants: tuple[int, ...]
    transitions: tuple[Transition, ...]


def year_of(seconds: int) -> int:
    """Return the UTC year of an instant, clamped to datetime's years 1-9999."""
    ordinal = min(max(seconds // 86400 + EPOCH_ORDINAL, 1), _LAST_ORDINAL)
    return date.fromordinal(ordinal).year


def year_start(year: int) -> int:
    return (date(year, 1, 1).toordinal() - EPOCH_ORDINAL) * 86400


def _probe(zone: ZoneInfo, seconds: int) -> int:
    clamped = min(max(seconds, FIRST_SECOND), LAST_SECOND)
    offset = (_EPOCH + timedelta(seconds=clamped)).astimezone(zone).utcoffset()
    assert offset is not None  # ZoneInfo always returns an offset for aware input
    return offset // timedelta(seconds=1)


def _bisect_change(zone: ZoneInfo, low: int, high: int, low_offset: int) -> int:
    """Return the first second in (low, high] whose offset differs from ``low_offset``."""
    while high - low > 1:
        middle = (low + high) // 2
        if _probe(zone, middle) == low_offset:
            low = middle
        else:
            high = middle
    return high


@functools.lru_cache(maxsize=4096)
def _year_offsets(zone: ZoneInfo, year: int) -> _YearOffsets:
    start = year_start(year)
    end = year_start(year + 1) if year < 9999 else LAST_SECOND
    transitions: list[Transition] = []
    previous_second = start - 1
    previous_offset = first_offset = _probe(zone, previous_second)
    for probe in range(start, end + _PROBE_STEP, _PROBE_STEP):
        second = min(probe, end - 1)
        offset = _probe(zone, second)
        while offset != previous_offset:
            change = _bisect_change(zone, previous_second, second, previous_offset)
            new_offset = _probe(zone, change)
            transitions.append(Transition(change, previous_offset, new_offset))
            previous_second, previous_offset = change, new_offset
        previous_second = second
    return _YearOffsets(first_offset, tuple(t.at for t in transitions), tuple(transitions))


class ZoneOffsets:
    """Offset lookups for one zone; ``fixed`` is the offset of a zone that never changes."""

    __slots__ = ("fixed", "zone")

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.fixed: int | None = _probe(zone, 0) if is_fixed_offset(zone) else None

    def __repr__(self) -> str:
        return f"ZoneOffsets({self.zone.key!r}, fixed={self.fixed})"

    def offset_at(self, seconds: int) -> int:
        if self.fixed is not None:
            return self.fixed
        table = _year_offsets(self.zone, year_of(seconds))
        index = bisect_right(table.instants, seconds)
        return table.transitions[index - 1].after if index else table.first_offset

    def transition_at(self, seconds: int) -> Transition | None:
        """Return the transition taking effect exactly at ``seconds``, if any."""
        if self.fixed is not None:
            return None
        table = _year_offsets(self.zone, year_of(seconds))
        index = bisect_left(table.instants, seconds)
        if index < len(table.instants) and table.instants[index] == seconds:
            return table.transitions[index]
        return None

    def last_transition(self, not_after: int, not_before: int) -> Transition | None:
        """Return the latest transition at an instant in [not_before, not_after]."""
        if self.fixed is not None:
            return None
        for year in range(year_of(not_after), year_of(not_before) - 1, -1):
            table = _year_offsets(self.zone, year)
            index = bisect_right(table.instants, not_after)
            if index and table.instants[index - 1] >= not_before:
                return table.transitions[index - 1]
            if index:
                return None
        return None

    def next_transition(self, after: int, not_after: int) -> int | None:
        """Return the first transition instant in (after, not_after]."""
        if self.fixed is not None:
            return None
        for year in range(year_of(after), year_of(not_after) + 1):
            table = _year_offsets(self.zone, year)
            index = bisect_right(table.instants, after)
            if index < len(table.instants):
                found = table.instants[index]
                return found if found <= not_after else None
        return None
