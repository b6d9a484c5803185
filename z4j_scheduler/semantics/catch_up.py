"""Planning which slots fire when the scheduler reaches a schedule late.

The cursor is the first slot not yet fired. At ``now``, the due slots are
those in [cursor, now]. A due slot at most ``grace`` old is on time and always
fires. Older due slots are missed, and the catch-up policy decides which of
them fire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import takewhile

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics.base import Schedule
from z4j_scheduler.semantics.instants import ONE_MICROSECOND, require_aware

MAX_CATCH_UP_FIRES = 1000


class CatchUpPolicy(enum.StrEnum):
    """Policy for missed slots."""

    SKIP = "skip"
    FIRE_ONE_MISSED = "fire_one_missed"
    FIRE_ALL_MISSED = "fire_all_missed"


def parse_policy(text: str) -> CatchUpPolicy:
    """Return the policy named ``text``, raising ScheduleError(field="catch_up")."""
    try:
        return CatchUpPolicy(text)
    except ValueError as error:
        names = ", ".join(policy.value for policy in CatchUpPolicy)
        raise ScheduleError("catch_up", text, f"unknown policy; use one of {names}") from error


@dataclass(frozen=True, slots=True)
class PlannedFire:
    """A slot to fire; ``missed`` is True for a catch-up fire, False for an on-time one."""

    slot: datetime
    missed: bool


@dataclass(frozen=True, slots=True)
class CatchUpPlan:
    """The fires for one visit of a schedule, oldest first, and the cursor after them.

    ``missed`` counts every missed slot, fired or not. ``dropped`` counts the
    missed slots that fire_all_missed did not fire because of the
    MAX_CATCH_UP_FIRES cap; it is 0 for the other policies.
    ``cursor`` is None when the schedule has no slot after ``now``.
    """

    fires: tuple[PlannedFire, ...]
    cursor: datetime | None
    dropped: int
    missed: int


def plan_catch_up(
    schedule: Schedule,
    cursor: datetime,
    now: datetime,
    grace: timedelta,
    policy: CatchUpPolicy,
) -> CatchUpPlan:
    """Plan the fires of ``schedule`` for the scheduler visiting it at ``now``.

    Slots in [cursor, now - grace) are missed and slots in [now - grace, now]
    are on time. When ``now`` is before ``cursor`` nothing is due, and the
    cursor becomes the first slot at or after the old one.
    Raises ScheduleError(field="grace") for a negative grace.
    """
    cursor, now = require_aware(cursor, "cursor"), require_aware(now, "now")
    if grace < timedelta(0):
        raise ScheduleError("grace", grace, "must be zero or positive")
    if now < cursor:
        return CatchUpPlan((), schedule.next_after(cursor - ONE_MICROSECOND), 0, 0)
    missed_end = max(now - grace, cursor)
    missed, missed_count, dropped = _missed_fires(schedule, cursor, missed_end, policy)
    on_time = _on_time_fires(schedule, missed_end, now)
    return CatchUpPlan(missed + on_time, schedule.next_after(now), dropped, missed_count)


def _missed_fires(
    schedule: Schedule, start: datetime, end: datetime, policy: CatchUpPolicy
) -> tuple[tuple[PlannedFire, ...], int, int]:
    """Return the missed fires in [start, end), the count of missed slots, and the dropped count."""
    if policy is CatchUpPolicy.FIRE_ALL_MISSED:
        slots, count = schedule.last_slots(start, end, MAX_CATCH_UP_FIRES)
        fires = tuple(PlannedFire(slot, missed=True) for slot in slots)
        return fires, count, count - len(fires)
    count = schedule.count_between(start, end)
    if policy is CatchUpPolicy.SKIP or count == 0:
        return (), count, 0
    latest = schedule.previous_before(end)
    if latest is None:
        return (), count, 0
    return (PlannedFire(latest, missed=True),), count, 0


def _on_time_fires(schedule: Schedule, start: datetime, now: datetime) -> tuple[PlannedFire, ...]:
    """Return a fire for every slot in [start, now].

    NOTE: on-time slots are not capped; their number is at most the grace
    divided by the schedule's shortest spacing.
    """
    slots = takewhile(lambda slot: slot <= now, schedule.slots_after(start - ONE_MICROSECOND))
    return tuple(PlannedFire(slot, missed=False) for slot in slots)
