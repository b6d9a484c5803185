"""When schedules fire: pure functions of their definition and a given instant.

No I/O, no clock reads and no logging happen here; the current instant is
always a parameter. Every returned instant is an aware UTC datetime. Invalid
definitions raise ``ScheduleError``; naive datetimes raise TypeError.
"""

from z4j_scheduler.semantics.base import Schedule, next_slots
from z4j_scheduler.semantics.catch_up import (
    MAX_CATCH_UP_FIRES,
    CatchUpPlan,
    CatchUpPolicy,
    PlannedFire,
    parse_policy,
    plan_catch_up,
)
from z4j_scheduler.semantics.cron import CronSchedule
from z4j_scheduler.semantics.instants import format_instant, parse_instant
from z4j_scheduler.semantics.interval import IntervalSchedule
from z4j_scheduler.semantics.one_shot import OneShotSchedule
from z4j_scheduler.semantics.parse import KINDS, parse_schedule
from z4j_scheduler.semantics.solar import SolarSchedule
from z4j_scheduler.semantics.zones import parse_zone

__all__ = [
    "KINDS",
    "MAX_CATCH_UP_FIRES",
    "CatchUpPlan",
    "CatchUpPolicy",
    "CronSchedule",
    "IntervalSchedule",
    "OneShotSchedule",
    "PlannedFire",
    "Schedule",
    "SolarSchedule",
    "format_instant",
    "next_slots",
    "parse_instant",
    "parse_policy",
    "parse_schedule",
    "parse_zone",
    "plan_catch_up",
]
