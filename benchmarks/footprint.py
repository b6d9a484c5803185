"""Idle CPU and resident memory with many schedules, none of them due."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from benchmarks import database, procstat
from benchmarks.context import Bench
from benchmarks.fires import utc
from benchmarks.services import Service, wait_until

logger = logging.getLogger(__name__)

# Seconds a new scheduler runs before its CPU or memory is read, so that
# start-up (imports, TLS handshake, first reads) is not counted as idle.
SETTLE_TIME = 10.0
# Logged by the scheduler when its reconcile pass over every schedule ends.
RECONCILE_DONE = "reconcile pass done"
# Seconds to wait for that pass; it reads one batch of 1,000 schedules per tick.
RECONCILE_TIMEOUT = 400.0
# First slots are this far ahead, spread over one more hour: none is due
# while the benchmarks run.
FUTURE = timedelta(hours=2)


def seed_idle(bench: Bench, count: int, prefix: str) -> None:
    step = timedelta(hours=1) / count
    first = utc(time.time()) + FUTURE
    database.seed_schedules(
        bench.db,
        prefix=prefix,
        count=count,
        first=first,
        step=step,
        period_seconds=86400,
        queue=bench.queue("idle"),
    )


def measure_idle(bench: Bench) -> dict[str, Any]:
    """Seed the idle schedules, run a leader, and measure CPU over the idle window.

    A new leader first walks every schedule once to check its cursor (the
    reconcile pass, repeated every 15 minutes by default). The window starts
    after that pass, whose own CPU is reported apart.
    """
    database.clear_schedules(bench.db)
    seed_idle(bench, bench.sizes.idle_schedules, "idle-")
    bench.stack.stop_schedulers()
    scheduler = bench.start_leader("idle")
    reconcile = _reconcile_pass(scheduler)
    time.sleep(SETTLE_TIME)
    result = cpu_over_window(bench, bench.sizes.idle_window)
    result["schedules"] = bench.sizes.idle_schedules
    result["reconcile_pass"] = reconcile
    result["scheduler_rss_kib"] = procstat.memory_kib(scheduler.pid)
    assert bench.stack.brain is not None
    result["brain_rss_kib"] = procstat.memory_kib(bench.stack.brain.pid)
    return result


def _reconcile_pass(scheduler: Service) -> dict[str, Any]:
    """Wait for the scheduler's first reconcile pass to end; return its duration and CPU."""
    try:
        done = wait_until(
            lambda: RECONCILE_DONE in scheduler.log_tail(1_000_000),
            "the first reconcile pass",
            RECONCILE_TIMEOUT,
            0.2,
        )
    except TimeoutError:
        return {"finished": False}
    return {
        "finished": True,
        "seconds": round(done - scheduler.started_at, 1),
        "scheduler_cpu_s": round(procstat.cpu_seconds(scheduler.pid), 2),
    }


def cpu_over_window(bench: Bench, window: float) -> dict[str, Any]:
    """Return the CPU of the brain and the schedulers over ``window`` seconds, as % of one core."""
    assert bench.stack.brain is not None
    brain = bench.stack.brain.pid
    schedulers = [service.pid for service in bench.stack.schedulers]
    before = {pid: procstat.cpu_seconds(pid) for pid in [brain, *schedulers]}
    started = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - started
    used = {pid: procstat.cpu_seconds(pid) - before[pid] for pid in before}
    scheduler_cpu = sum(used[pid] for pid in schedulers)
    return {
        "window_s": round(elapsed, 1),
        "brain_percent": round(used[brain] / elapsed * 100, 3),
        "scheduler_percent": round(scheduler_cpu / elapsed * 100, 3),
        "total_percent": round(sum(used.values()) / elapsed * 100, 3),
    }


def measure_rss_large(bench: Bench, small: dict[str, Any]) -> dict[str, Any]:
    """Grow the idle schedules to the large count, restart the scheduler, compare memory."""
    extra = bench.sizes.rss_large_schedules - bench.sizes.idle_schedules
    seed_idle(bench, extra, "idle-large-")
    bench.stack.stop_schedulers()
    scheduler = bench.start_leader("idle-large")
    time.sleep(SETTLE_TIME)
    cpu = cpu_over_window(bench, min(bench.sizes.idle_window, 20.0))
    large_rss = procstat.memory_kib(scheduler.pid)
    result = {
        "small_schedules": bench.sizes.idle_schedules,
        "large_schedules": bench.sizes.rss_large_schedules,
        "small_rss_kib": small["scheduler_rss_kib"],
        "large_rss_kib": large_rss,
        "large_peak_rss_kib": procstat.memory_kib(scheduler.pid, "VmHWM"),
        "large_idle_cpu": cpu,
    }
    bench.stack.stop_schedulers()
    return result
