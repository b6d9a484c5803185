"""Measure slots per second of the schedule semantics, with croniter as the yardstick.

Run from the repository root:

    python benchmarks/bench_semantics.py [--seconds 1.0] [--repeats 5]

Each row computes consecutive slots from 2024-01-01T00:00Z. ``next_after``
calls it once per slot, as croniter's ``get_next`` does; ``slots_after``
iterates lazily. Each figure is the best of ``--repeats`` runs of about
``--seconds`` each, and the ratio compares it with croniter's ``get_next``
on the same expression in the same run. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from zoneinfo import ZoneInfo

from croniter import croniter

from z4j_scheduler.semantics import Schedule, parse_schedule
from z4j_scheduler.semantics.solar import event_on

START = datetime(2024, 1, 1, tzinfo=UTC)
BATCH = 200


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    expression: str
    zone: str
    # The same schedule in croniter's syntax, or None when croniter has no equivalent.
    croniter_expression: str | None


CASES = (
    Case("cron every 5 min, UTC", "cron", "*/5 * * * *", "UTC", "*/5 * * * *"),
    Case("cron weekdays 09:00, UTC", "cron", "0 9 * * 1-5", "UTC", "0 9 * * 1-5"),
    Case(
        "cron lists and ranges, UTC",
        "cron",
        "15,45 8-18 1-20 * 1-5",
        "UTC",
        "15,45 8-18 1-20 * 1-5",
    ),
    Case("cron every 5 min, New York", "cron", "*/5 * * * *", "America/New_York", "*/5 * * * *"),
    Case("cron daily 02:30, Berlin", "cron", "30 2 * * *", "Europe/Berlin", "30 2 * * *"),
    Case("cron last Friday, Lord Howe", "cron", "0 2 * * 5L", "Australia/Lord_Howe", "0 2 * * L5"),
    Case("interval 90m", "interval", "90m", "UTC", None),
    Case("solar sunset, Amsterdam", "solar", "sunset 52.3676 4.9041", "Europe/Amsterdam", None),
)


def measure(make_step: Callable[[], Callable[[], object]], seconds: float, repeats: int) -> float:
    """Return the best rate, in calls per second, over ``repeats`` runs each starting afresh."""
    best = 0.0
    for _ in range(repeats):
        step = make_step()
        calls = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(BATCH):
                step()
            calls += BATCH
        best = max(best, calls / (time.perf_counter() - started))
    return best


def next_after_step(schedule: Schedule) -> Callable[[], object]:
    # A scheduler computes each day's solar event once, so solar runs start uncached.
    event_on.cache_clear()
    state = {"last": START}

    def step() -> object:
        found = schedule.next_after(state["last"])
        state["last"] = found if found is not None else START
        return found

    return step


def iterator_step(schedule: Schedule) -> Callable[[], object]:
    event_on.cache_clear()
    slots: Iterator[datetime] = schedule.slots_after(START)
    return lambda: next(slots)


def croniter_step(expression: str, zone: str) -> Callable[[], object]:
    iterator = croniter(expression, START.astimezone(ZoneInfo(zone)))
    return lambda: iterator.get_next(datetime)


def schedule_of(case: Case) -> Schedule:
    return parse_schedule(case.kind, case.expression, case.zone, START)


def rows(seconds: float, repeats: int) -> Iterator[tuple[str, float, float, float | None]]:
    for case in CASES:
        schedule = schedule_of(case)
        by_call = measure(partial(next_after_step, schedule), seconds, repeats)
        by_iterator = measure(partial(iterator_step, schedule), seconds, repeats)
        yardstick = None
        if case.croniter_expression is not None:
            make_step = partial(croniter_step, case.croniter_expression, case.zone)
            yardstick = measure(make_step, seconds, repeats)
        yield case.name, by_call, by_iterator, yardstick


def ratio(rate: float, yardstick: float | None) -> str:
    return "" if yardstick is None else f"{rate / yardstick:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure")
    args = parser.parse_args()

    print(f"Python {platform.python_version()}, {platform.machine()}")
    print()
    print(
        "| case | next_after slots/s | slots_after slots/s | croniter get_next slots/s "
        "| next_after / croniter | slots_after / croniter |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, by_call, by_iterator, yardstick in rows(args.seconds, args.repeats):
        croniter_text = "" if yardstick is None else f"{yardstick:,.0f}"
        print(
            f"| {name} | {by_call:,.0f} | {by_iterator:,.0f} | {croniter_text} "
            f"| {ratio(by_call, yardstick)} | {ratio(by_iterator, yardstick)} |"
        )


if __name__ == "__main__":
    main()
