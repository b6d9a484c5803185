"""Turn due schedule rows into fire requests and cursor moves; pure, "now" is a parameter."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import Schedule, parse_policy, parse_schedule, plan_catch_up
from z4j_scheduler.store import DueRow
from z4j_scheduler.wire.messages import CursorAdvance, FireRequest, Trigger, slot_fire_id

# Parsed schedules kept between ticks; bounded so memory stays flat in the
# number of schedules.
CACHE_SIZE = 10_000


@dataclass
class TickPlan:
    fires: list[FireRequest] = field(default_factory=list)
    advances: list[CursorAdvance] = field(default_factory=list)
    # Rows that could not be planned, with the reason.
    broken: dict[int, str] = field(default_factory=dict)
    dropped: int = 0


class Planner:
    """Plans due rows with the semantics layer, caching parsed schedules by revision."""

    def __init__(self, grace: timedelta) -> None:
        self.grace = grace
        self._cache: OrderedDict[tuple[object, ...], Schedule] = OrderedDict()

    def plan(self, rows: Sequence[DueRow], now: datetime) -> TickPlan:
        result = TickPlan()
        for row in rows:
            try:
                self._plan_row(row, now, result)
            except ScheduleError as error:
                result.broken[row.id] = str(error)
        return result

    def _plan_row(self, row: DueRow, now: datetime, result: TickPlan) -> None:
        timing = self.timing(row)
        catch_up = plan_catch_up(
            timing, row.next_run_at, now, self.grace, parse_policy(row.catch_up)
        )
        result.dropped += catch_up.dropped
        for planned in catch_up.fires:
            trigger = Trigger.CATCH_UP if planned.missed else Trigger.SCHEDULE
            result.fires.append(
                FireRequest(
                    fire_id=slot_fire_id(row.id, planned.slot),
                    schedule_id=row.id,
                    scheduled_for=planned.slot,
                    trigger=trigger,
                    revision=row.revision,
                    next_cursor=catch_up.cursor,
                )
            )
        if not catch_up.fires:
            skipped = catch_up.missed
            result.advances.append(CursorAdvance(row.id, row.revision, catch_up.cursor, skipped))

    def timing(self, row: DueRow) -> Schedule:
        """Return the parsed definition of ``row``; raises ScheduleError for an invalid one."""
        # The definition is part of the key because SQLite can give a new
        # schedule the id of a deleted one, with the same revision.
        key = (row.id, row.revision, row.kind, row.expression, row.timezone, row.start_at)
        timing = self._cache.get(key)
        if timing is None:
            timing = parse_schedule(row.kind, row.expression, row.timezone, row.start_at)
            self._cache[key] = timing
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return timing
