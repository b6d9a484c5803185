"""The ``next`` and ``catch-up`` commands: preview a schedule without a database.

Both read the schedule from options, compute with the pure semantics layer
and print either a table for people or one JSON object for scripts. Invalid
input prints one line naming the field and the value to stderr and exits
with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.semantics import (
    KINDS,
    MAX_CATCH_UP_FIRES,
    CatchUpPlan,
    CatchUpPolicy,
    CronSchedule,
    Schedule,
    format_instant,
    next_slots,
    parse_instant,
    parse_policy,
    parse_schedule,
    plan_catch_up,
)
from z4j_scheduler.semantics.zones import is_repeated_wall_time

PROGRAM = "z4j-scheduler"
MAX_COUNT = 1000
DEFAULT_COUNT = 5
DEFAULT_GRACE_SECONDS = "60"


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``next`` and ``catch-up`` commands on the CLI's subparsers."""
    _add_next(subparsers)
    _add_catch_up(subparsers)


def _add_schedule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, help=f"kind of schedule: {', '.join(KINDS)}")
    parser.add_argument(
        "--expression",
        required=True,
        help="cron expression, interval (600 or 1h30m), ISO-8601 instant, "
        "or 'EVENT LATITUDE LONGITUDE [OFFSET]'",
    )
    parser.add_argument(
        "--timezone", default="UTC", help="IANA zone of the schedule (default: UTC)"
    )
    parser.add_argument(
        "--start-at",
        metavar="INSTANT",
        help="anchor of an interval schedule, ISO-8601 with offset or Z",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_next(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "next",
        help="print the next slots of a schedule",
        description="Print the next slots of a schedule strictly after an instant. "
        "An interval schedule without --start-at is anchored at --after.",
    )
    _add_schedule_options(parser)
    parser.add_argument(
        "--after",
        metavar="INSTANT",
        help="list slots strictly after this instant, ISO-8601 with offset or Z (default: now)",
    )
    parser.add_argument(
        "--count",
        default=str(DEFAULT_COUNT),
        help=f"number of slots, 1 to {MAX_COUNT} (default: {DEFAULT_COUNT})",
    )
    parser.set_defaults(handler=run_next)


def _add_catch_up(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "catch-up",
        help="print the slots a scheduler would fire after an outage",
        description="Print the slots that fire when the scheduler reaches a schedule at --now "
        "with its cursor at --cursor, and the new cursor. An interval schedule without "
        "--start-at is anchored at --cursor.",
    )
    _add_schedule_options(parser)
    parser.add_argument(
        "--policy",
        required=True,
        help=f"catch-up policy: {', '.join(policy.value for policy in CatchUpPolicy)}",
    )
    parser.add_argument(
        "--cursor", required=True, metavar="INSTANT", help="first slot not yet fired"
    )
    parser.add_argument(
        "--now", required=True, metavar="INSTANT", help="instant the scheduler reaches the schedule"
    )
    parser.add_argument(
        "--grace",
        default=DEFAULT_GRACE_SECONDS,
        metavar="SECONDS",
        help="misfire grace in seconds; older due slots are missed "
        f"(default: {DEFAULT_GRACE_SECONDS})",
    )
    parser.set_defaults(handler=run_catch_up)


def run_next(args: argparse.Namespace) -> int:
    """Print the next slots; return the exit status."""
    try:
        after = _optional_instant(args.after, "after") or datetime.now(UTC).replace(microsecond=0)
        schedule = _parse_schedule(args, default_anchor=after)
        count = _check_count(args.count)
    except ScheduleError as error:
        return _fail(error)
    slots = next_slots(schedule, after, count)
    output = _slots_json(slots) if args.json else render_slots(schedule, after, slots)
    print(output)
    return 0


def run_catch_up(args: argparse.Namespace) -> int:
    """Print the catch-up plan; return the exit status."""
    try:
        cursor = parse_instant(args.cursor, "cursor")
        now = parse_instant(args.now, "now")
        grace = _parse_grace(args.grace)
        policy = parse_policy(args.policy)
        schedule = _parse_schedule(args, default_anchor=cursor)
    except ScheduleError as error:
        return _fail(error)
    plan = plan_catch_up(schedule, cursor, now, grace, policy)
    output = _plan_json(plan) if args.json else render_plan(schedule, policy, plan)
    print(output)
    return 0


def _parse_schedule(args: argparse.Namespace, default_anchor: datetime) -> Schedule:
    start_at = _optional_instant(args.start_at, "start_at") or default_anchor
    return parse_schedule(args.kind, args.expression, args.timezone, start_at)


def _optional_instant(text: str | None, field: str) -> datetime | None:
    return None if text is None else parse_instant(text, field)


def _check_count(text: str) -> int:
    reason = f"must be a whole number from 1 to {MAX_COUNT}"
    if not (text.isascii() and text.strip().isdigit()):
        raise ScheduleError("count", text, reason)
    count = int(text)
    if not 1 <= count <= MAX_COUNT:
        raise ScheduleError("count", text, reason)
    return count


def _parse_grace(text: str) -> timedelta:
    try:
        seconds = float(text)
    except ValueError as error:
        raise ScheduleError("grace", text, "must be a number of seconds, 0 or more") from error
    if not math.isfinite(seconds) or seconds < 0:
        raise ScheduleError("grace", text, "must be a number of seconds, 0 or more")
    try:
        return timedelta(seconds=seconds)
    except OverflowError as error:
        raise ScheduleError("grace", text, "is longer than 999999999 days") from error


def _fail(error: ScheduleError) -> int:
    print(f"{PROGRAM}: {error}", file=sys.stderr)
    return 2


def _slots_json(slots: Sequence[datetime]) -> str:
    return json.dumps({"slots": [format_instant(slot) for slot in slots]})


def _plan_json(plan: CatchUpPlan) -> str:
    cursor = None if plan.cursor is None else format_instant(plan.cursor)
    fires = [format_instant(fire.slot) for fire in plan.fires]
    return json.dumps({"fire": fires, "cursor": cursor, "dropped": plan.dropped})


def render_slots(schedule: Schedule, after: datetime, slots: Sequence[datetime]) -> str:
    """Return a table of slots in UTC and in the schedule's zone, with DST notes."""
    lines = [f"{_describe(schedule)}: next {len(slots)} slots after {format_instant(after)}"]
    if not slots:
        lines.append("no slot follows")
    rows = [
        (
            str(number),
            format_instant(slot),
            _format_local(slot, schedule),
            _dst_note(schedule, slot),
        )
        for number, slot in enumerate(slots, start=1)
    ]
    if rows:
        header = ("#", "UTC", schedule.zone.key, "note")
        lines.extend(_table([header, *rows]))
    return "\n".join(lines)


def render_plan(schedule: Schedule, policy: CatchUpPolicy, plan: CatchUpPlan) -> str:
    """Return the fires of a catch-up plan, the counts and the new cursor as text."""
    lines = [f"{_describe(schedule)}, policy {policy.value}"]
    rows = [
        (format_instant(fire.slot), "missed" if fire.missed else "on time") for fire in plan.fires
    ]
    lines.extend(_table([("fire", "as"), *rows]) if rows else ["nothing to fire"])
    lines.append(
        f"missed slots: {plan.missed}, dropped over the cap of {MAX_CATCH_UP_FIRES}: {plan.dropped}"
    )
    cursor = "none (no slot follows)" if plan.cursor is None else format_instant(plan.cursor)
    lines.append(f"new cursor: {cursor}")
    return "\n".join(lines)


def _describe(schedule: Schedule) -> str:
    return f"{schedule.kind} {schedule.expression!r} in {schedule.zone.key}"


def _format_local(slot: datetime, schedule: Schedule) -> str:
    local = slot.astimezone(schedule.zone)
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    hours, rest = divmod(int(abs(offset).total_seconds()), 3600)
    minutes, seconds = divmod(rest, 60)
    offset_text = f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
    fraction = f".{local.microsecond:06d}".rstrip("0") if local.microsecond else ""
    return f"{local:%Y-%m-%d %H:%M:%S}{fraction} {offset_text} {local.tzname()}"


def _dst_note(schedule: Schedule, slot: datetime) -> str:
    local = slot.astimezone(schedule.zone)
    if isinstance(schedule, CronSchedule) and not schedule.matches(local.replace(tzinfo=None)):
        return "moved: its wall time was skipped by a clock change"
    if is_repeated_wall_time(local):
        occurrence = "second" if local.fold else "first"
        return f"repeated wall time, {occurrence} occurrence"
    return ""


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
